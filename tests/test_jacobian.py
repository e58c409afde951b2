"""Whole-network Jacobians: dense, per-step, matrix-free (issue 3, items 1-3, 8)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import contdepth as cd

from .helpers import make_field, make_model, make_reversible_model, MODEL_KINDS


def _fd_jacobian(model, y, eps=1e-6):
    shape = y.shape
    flat = jnp.reshape(y, (-1,))

    def f(x):
        return jnp.reshape(model(jnp.reshape(x, shape)), (-1,))

    basis = jnp.eye(flat.size, dtype=flat.dtype)
    cols = jax.vmap(lambda e: (f(flat + eps * e) - f(flat - eps * e)) / (2 * eps))(basis)
    return cols.T


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_jacobian_matches_finite_differences_and_modes_agree(kind, getkey):
    model, y = make_model(kind, getkey())
    jac = cd.jacobian(model, y)
    assert jac.shape == (3, 3)
    fd = _fd_jacobian(model, y)
    assert np.max(np.abs(jac - fd)) <= 1e-6 * np.max(np.abs(jac))
    fwd = cd.jacobian(model, y, mode="fwd")
    rev = cd.jacobian(model, y, mode="rev")
    np.testing.assert_allclose(fwd, rev, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::contdepth.StepStraddlesJumpWarning")  # 5 steps, 4 pieces
@pytest.mark.parametrize("kind", ["conv", "attention", "mlp_time", "piecewise"])
def test_step_jacobian_product_equals_jacobian(kind, getkey):
    field, y = make_field(kind, getkey())
    # A PiecewiseField declares its horizon: the model must share it.
    model = cd.EulerResNet(field, 5, getattr(field, "horizon", 0.7))
    steps = cd.step_jacobians(model, y)
    d = y.size
    assert steps.shape == (5, d, d)
    product = jnp.eye(d)
    for s in steps:
        product = s @ product
    jac = cd.jacobian(model, y)
    np.testing.assert_allclose(product, jac, rtol=0, atol=1e-10 * np.max(np.abs(jac)))


@pytest.mark.parametrize("kind", ["plain", "highway", "scaled"])
def test_layer_jacobians_of_any_discrete_model(kind, getkey):
    model, y = make_model(kind, getkey())
    product = jnp.eye(3)
    for s in cd.step_jacobians(model, y):
        product = s @ product
    jac = cd.jacobian(model, y)
    np.testing.assert_allclose(product, jac, rtol=0, atol=1e-12 * np.max(np.abs(jac)))


def test_jacobian_under_vmap_and_jit(getkey):
    model, _ = make_model("euler", getkey())
    ys = jr.normal(getkey(), (4, 3))
    batched = eqx.filter_jit(jax.vmap(lambda y: cd.jacobian(model, y)))(ys)
    for i in range(4):
        np.testing.assert_allclose(batched[i], cd.jacobian(model, ys[i]), atol=1e-14)


def test_linear_field_spectrum_exact_and_converges_to_expm(getkey):
    a = 0.8 * jr.normal(getkey(), (4, 4))
    y = jr.normal(getkey(), (4,))
    horizon = 1.0
    exact_flow = np.linalg.svd(scipy.linalg.expm(horizon * np.asarray(a)), compute_uv=False)
    ns = np.array([8, 16, 32, 64, 128, 256, 512])
    errors = []
    for n in ns:
        model = cd.EulerResNet(cd.LinearField(a), int(n), horizon)
        sv = cd.singular_values(model, y)
        h = horizon / n
        truth = np.linalg.svd(
            np.linalg.matrix_power(np.eye(4) + h * np.asarray(a), int(n)), compute_uv=False
        )
        np.testing.assert_allclose(sv, truth, rtol=1e-10)
        errors.append(np.max(np.abs(sv - exact_flow)))
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert -1.1 <= slope <= -0.9, slope


def test_matrix_free_extremes_match_dense_svd_at_d512(getkey):
    d = 512
    field = cd.MLPField(d, 16, 1, key=getkey())
    model = cd.EulerResNet(field, 5, 1.0)
    y = jr.normal(getkey(), (d,))
    dense = np.asarray(cd.singular_values(model, y))
    ext = cd.extreme_singular_values(model, y, 5, key=getkey())
    np.testing.assert_allclose(ext.largest, dense[:5], rtol=1e-6)
    np.testing.assert_allclose(ext.smallest, dense[::-1][:5], rtol=1e-6)
    assert np.all(np.asarray(ext.largest_bound) <= 1e-6 * dense[0])


def test_matrix_free_on_a_generic_dense_spectrum(getkey):
    # `J = I + 0.3 G / sqrt(d)` has no low-rank structure to exploit.
    d = 96
    g = jr.normal(getkey(), (d, d)) / np.sqrt(d)
    model = cd.EulerResNet(cd.LinearField(0.3 * g), 1, 1.0)
    y = jr.normal(getkey(), (d,))
    dense = np.asarray(cd.singular_values(model, y))
    ext = cd.extreme_singular_values(model, y, 3, key=getkey(), num_iters=d)
    np.testing.assert_allclose(ext.largest, dense[:3], rtol=1e-10)
    np.testing.assert_allclose(ext.smallest, dense[::-1][:3], rtol=1e-10)


def test_jacobian_operator_matches_dense(getkey):
    field, y = make_field("conv", getkey())
    model = cd.EulerResNet(field, 3, 1.0)
    op = cd.jacobian_operator(model, y)
    np.testing.assert_allclose(op.as_matrix(), cd.jacobian(model, y), atol=1e-12)


def test_lanczos_runs_step_by_step_inside_scan(getkey):
    import lineax as lx

    model, y = make_model("euler", getkey())
    op = lx.linearise(cd.jacobian_operator(model, y))
    solver = cd.GolubKahanLanczos(3)
    state = solver.init(op, getkey())
    state, _ = jax.lax.scan(lambda s, _: (solver.step(op, s), None), state, None, length=3)
    values, _ = solver.singular_values(state)
    np.testing.assert_allclose(values, cd.singular_values(model, y), rtol=1e-10)


def test_bad_jacobian_inputs(getkey):
    model, y = make_model("euler", getkey())
    with pytest.raises(ValueError, match="`mode`"):
        cd.jacobian(model, y, mode="sideways")
    with pytest.raises(ValueError, match=r"`y`.*shape"):
        cd.jacobian(model, jnp.ones(5))
    with pytest.raises(ValueError, match=r"`k`.*d = 3.*k=4"):
        cd.extreme_singular_values(model, y, 4, key=getkey())
    with pytest.raises(ValueError, match="square"):
        cd.extreme_singular_values(lambda x, args=None: x[:2], y, 1, key=getkey())
    with pytest.raises(TypeError, match="`model` must be a discrete depth model"):
        cd.step_jacobians(lambda y, args=None: y, y)
    with pytest.raises(TypeError, match="`key`"):
        cd.extreme_singular_values(model, y, 1, key=3)


@pytest.mark.parametrize("kind", ["momentum", "reversible"])
def test_jacobian_of_reversible_models_in_both_modes(kind, getkey):
    model = make_reversible_model(kind, getkey())
    y = jr.normal(getkey(), (4,))
    auto = cd.jacobian(model, y)  # forward mode through the "store" twin
    rev = cd.jacobian(model, y, mode="rev")  # the reversible custom VJP
    np.testing.assert_allclose(auto, rev, atol=1e-12)
    np.testing.assert_allclose(auto, _fd_jacobian(model, y), atol=1e-6 * np.max(np.abs(auto)))


def _float64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x,
                        tree)


def test_forward_mode_through_a_neural_ode_inside_another_model(getkey):
    """The adjoint swap reaches a `NeuralODE` nested in a model (a `Classifier` body, an
    `AugmentedNeuralODE`), not only one at the top: fwd == rev == finite differences."""
    ode = cd.NeuralODE(cd.MLPField(4, 8, 1, key=getkey()), horizon=1.0)
    classifier = _float64(cd.Classifier(
        eqx.nn.Linear(3, 4, key=getkey()), ode, eqx.nn.Linear(4, 2, key=getkey())))
    augmented = _float64(cd.AugmentedNeuralODE(
        cd.NeuralODE(cd.MLPField(6, 8, 1, key=getkey()), horizon=1.0), augment=2))
    for model, y in [(classifier, jr.normal(getkey(), (3,))),
                     (augmented, jr.normal(getkey(), (4,)))]:
        fwd = cd.jacobian(model, y, mode="fwd")
        rev = cd.jacobian(model, y, mode="rev")
        np.testing.assert_allclose(fwd, rev, rtol=0, atol=1e-12)
        fd = _fd_jacobian(model, y)
        assert np.max(np.abs(fwd - fd)) <= 1e-6 * np.max(np.abs(fwd))
