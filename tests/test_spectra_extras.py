"""Hutchinson, log-determinants, Lyapunov exponents, stability regions and layer
gradient profiles (issue 3, items 3 second half, 6, 7, 8 and `layer_gradient_norms`)."""

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from diffrax._local_interpolation import ThirdOrderHermitePolynomialInterpolation

import contdepth as cd

from .helpers import make_field, make_model, MODEL_KINDS


class _ClassicalRK4(diffrax.AbstractERK):
    """The classical fourth-order Runge-Kutta method (diffrax 0.7 ships none), for a
    fixed-step `cd.NeuralODE` whose steps match `method="rk4"`."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        c=np.array([0.5, 0.5, 1.0]),
    )
    interpolation_cls: ClassVar[Callable] = (
        ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        return 4


# Dense references, jitted once per model structure (much cheaper than op-by-op for
# `NeuralODE`, whose solver would otherwise be traced eagerly).
_jacobian = eqx.filter_jit(cd.jacobian)
_singular_values = eqx.filter_jit(cd.singular_values)


def _rotation_field(b):
    return cd.LinearField(jnp.array([[0.0, b], [-b, 0.0]]))


def _linear_test_matrix():
    """A non-normal real 4x4 `A` with eigenvalues 0.2, -0.5 +- 2i, -1.5."""
    d = np.zeros((4, 4))
    d[0, 0], d[3, 3] = 0.2, -1.5
    d[1:3, 1:3] = [[-0.5, 2.0], [-2.0, -0.5]]
    p = np.eye(4) + 0.3 * np.roll(np.eye(4), 1, axis=1)
    return jnp.asarray(p @ d @ np.linalg.inv(p))


# --- Hutchinson (item 3, second half) -------------------------------------------------


@pytest.mark.parametrize("kind", ["euler", "plain"])
def test_hutchinson_within_three_standard_errors(kind, getkey):
    if kind == "euler":
        model = cd.EulerResNet(cd.MLPField(64, 32, 1, key=getkey()), 6, 1.0)
        y = jr.normal(getkey(), (64,))
    else:
        model, y = make_model(kind, getkey())
    exact = float(jnp.sum(_jacobian(model, y) ** 2))
    # Key-independent: every key within 5 standard errors (two-sided normal tail
    # 6e-7 per key), and the pooled estimate of 5 keys within 3 of its own.
    results = [cd.jacobian_frobenius(model, y, num_probes=64, key=getkey()) for _ in range(5)]
    for result in results:
        assert result.num_probes == 64
        assert 0 < result.standard_error < 0.5 * exact
        assert abs(result.estimate - exact) <= 5 * result.standard_error
    pooled = np.mean([float(r.estimate) for r in results])
    pooled_se = np.sqrt(np.sum([float(r.standard_error) ** 2 for r in results])) / 5
    assert abs(pooled - exact) <= 3 * pooled_se


def test_hutchinson_is_exact_for_diagonal_jacobians(getkey):
    # Rademacher probes: ||J z||^2 = sum_i J_ii^2 z_i^2 = ||J||_F^2 for every z.
    a = jnp.array([0.5, -1.0, 2.0])
    y = jr.normal(getkey(), (3,))
    euler = cd.EulerResNet(cd.LinearField(jnp.diag(a)), 4, 1.0)
    result = cd.jacobian_frobenius(euler, y, num_probes=5, key=getkey())
    exact = jnp.sum((1 + a / 4) ** 8)
    np.testing.assert_allclose(result.estimate, exact, rtol=1e-13)
    assert result.standard_error <= 1e-13 * exact
    # The Neural ODE (forward mode through diffrax): J = expm(T diag(a)).
    ode = cd.NeuralODE(cd.LinearField(jnp.diag(a)), 1.0, rtol=1e-10, atol=1e-12)
    result = cd.jacobian_frobenius(ode, y, num_probes=5, key=getkey())
    np.testing.assert_allclose(result.estimate, jnp.sum(jnp.exp(2 * a)), rtol=1e-7)
    assert result.standard_error <= 1e-7 * result.estimate


def test_hutchinson_under_jit_and_vmap(getkey):
    model, _ = make_model("euler", getkey())
    ys = jr.normal(getkey(), (3, 3))
    key = getkey()

    @eqx.filter_jit
    def estimate(y):
        return cd.jacobian_frobenius(model, y, num_probes=8, key=key).estimate

    batched = jax.vmap(estimate)(ys)
    for i in range(3):
        expected = cd.jacobian_frobenius(model, ys[i], num_probes=8, key=key).estimate
        np.testing.assert_allclose(batched[i], expected, rtol=1e-12)


# --- log-determinant (item 6) ---------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in MODEL_KINDS if k != "ode"])
def test_log_det_equals_sum_log_singular_values(kind, getkey):
    model, y = make_model(kind, getkey())
    logdet = cd.log_det_jacobian(model, y)
    expected = jnp.sum(jnp.log(_singular_values(model, y)))
    np.testing.assert_allclose(logdet, expected, rtol=0, atol=1e-10)


def test_log_det_of_neural_ode_is_liouville(getkey):
    # The flow of dy/dt = A y has det expm(TA) = exp(T tr A).
    a = 0.5 * jr.normal(getkey(), (3, 3))
    model = cd.NeuralODE(cd.LinearField(a), 1.5, rtol=1e-10, atol=1e-12)
    logdet = cd.log_det_jacobian(model, jr.normal(getkey(), (3,)))
    np.testing.assert_allclose(logdet, 1.5 * jnp.trace(a), rtol=0, atol=1e-7)


def test_euler_log_det_of_time_dependent_field(getkey):
    field, y = make_field("mlp_time", getkey())
    model = cd.EulerResNet(field, 5, 0.8)
    _, dense = jnp.linalg.slogdet(_jacobian(model, y))
    np.testing.assert_allclose(cd.log_det_jacobian(model, y), dense, rtol=0, atol=1e-10)


def test_log_det_of_deep_plain_net_does_not_underflow(getkey):
    # Layer k has Jacobian diag(1 - tanh(z_k)^2) W_k, z_k = W_k y_k + b_k. At depth 200
    # the dense product's determinant is far below the float64 range.
    model = cd.PlainNet(8, 200, key=getkey())
    y = jr.normal(getkey(), (8,))
    ys = model.trajectory(y)[:-1]
    z = jnp.einsum("kij,kj->ki", model.weights, ys) + model.biases
    _, log_det_w = jnp.linalg.slogdet(model.weights)
    expected = jnp.sum(jnp.log1p(-jnp.tanh(z) ** 2)) + jnp.sum(log_det_w)
    logdet = cd.log_det_jacobian(model, y)
    assert expected < -800  # det = exp(expected) underflows float64
    np.testing.assert_allclose(logdet, expected, rtol=1e-12)


def test_log_det_of_linear_euler_is_n_log_det(getkey):
    a = 0.5 * jr.normal(getkey(), (4, 4))
    n, horizon = 7, 1.3
    model = cd.EulerResNet(cd.LinearField(a), n, horizon)
    _, per_step = jnp.linalg.slogdet(jnp.eye(4) + (horizon / n) * a)
    np.testing.assert_allclose(
        cd.log_det_jacobian(model, jnp.ones(4)), n * per_step, rtol=1e-13
    )


# --- Lyapunov exponents (item 6) ------------------------------------------------------


def test_lyapunov_exponents_of_linear_field_are_real_parts_of_eigenvalues():
    # Finite-T exponents carry O(1/T) start-up transients (measured 1e-4 to 6e-4 at
    # T = 8000 over start frames); RK4 at h = 1/8 adds 7e-5 of discretisation bias.
    a = _linear_test_matrix()
    field = cd.LinearField(a)
    horizon, num_steps = 8000.0, 64000
    lam = np.linalg.eigvals(np.asarray(a))
    # RK4 at h = 1/8: the ODE's exponents, Re(lambda), up to O(1/T) transients.
    exps = cd.lyapunov_exponents(field, jnp.ones(4), horizon, num_steps=num_steps,
                                 method="rk4")
    np.testing.assert_allclose(np.sort(exps), np.sort(lam.real), rtol=0, atol=1e-3)
    # Forward Euler: the exponents of the Euler *network*, log|1 + h lambda| / h.
    h = horizon / num_steps
    exps = cd.lyapunov_exponents(field, jnp.ones(4), horizon, num_steps=num_steps)
    np.testing.assert_allclose(
        np.sort(exps), np.sort(np.log(np.abs(1 + h * lam)) / h), rtol=0, atol=1e-3
    )
    assert np.max(np.abs(np.sort(exps) - np.sort(lam.real))) > 1e-2  # h = 1/8 is coarse
    # k < d: the leading exponents.
    top = cd.lyapunov_exponents(field, jnp.ones(4), horizon, num_steps=num_steps, k=2,
                                method="rk4")
    np.testing.assert_allclose(np.sort(top), np.sort(lam.real)[2:], rtol=0, atol=1e-3)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_lyapunov_sum_is_log_det_over_horizon_and_majorised(method, getkey):
    field = cd.MLPField(4, 16, 1, time_dependent=True, key=getkey())
    y0 = jr.normal(getkey(), (4,))
    horizon, num_steps = 2.0, 16
    if method == "euler":
        model = cd.EulerResNet(field, num_steps, horizon)
    else:
        h = horizon / num_steps
        model = cd.NeuralODE(field, horizon, solver=_ClassicalRK4(), dt0=h)
    exps = cd.lyapunov_exponents(field, y0, horizon, num_steps=num_steps, method=method,
                                 key=getkey())
    jac = _jacobian(model, y0)
    _, logdet = jnp.linalg.slogdet(jac)
    np.testing.assert_allclose(jnp.sum(exps), logdet / horizon, rtol=0, atol=1e-10)
    if method == "euler":
        np.testing.assert_allclose(
            jnp.sum(exps), cd.log_det_jacobian(model, y0) / horizon, rtol=0, atol=1e-10
        )
    # Finite T: partial sums of the QR exponents never exceed those of log(sigma)/T.
    log_sigma = jnp.log(jnp.linalg.svd(jac, compute_uv=False)) / horizon
    gap = jnp.cumsum(log_sigma) - jnp.cumsum(exps)
    assert np.all(gap[:-1] >= -1e-10)
    assert abs(gap[-1]) <= 1e-10


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
def test_lyapunov_differs_from_log_sigma_at_finite_horizon(seed):
    # At finite T the leading QR exponent is the growth of the start frame's first
    # column q, log|J q| / T, not log sigma_max / T: they differ unless q is the top
    # right singular vector. This holds for every key (None: the default key), so the
    # test checks the identity rather than a key-dependent size of the gap.
    field = cd.LinearField(jnp.array([[-1.0, 20.0], [0.0, -2.0]]))
    model = cd.EulerResNet(field, 200, 2.0)
    key = None if seed is None else jr.PRNGKey(seed)
    exps = cd.lyapunov_exponents(field, jnp.ones(2), 2.0, num_steps=200, key=key)
    q = cd.LyapunovQR(field, 0.01, 2).init(jnp.ones(2), jr.PRNGKey(0) if key is None
                                            else key).frame[:, 0]
    jac = _jacobian(model, jnp.ones(2))
    log_sigma = jnp.log(jnp.linalg.svd(jac, compute_uv=False)) / 2.0
    np.testing.assert_allclose(exps[0], jnp.log(jnp.linalg.norm(jac @ q)) / 2.0,
                               rtol=0, atol=1e-10)
    _, v = jnp.linalg.eigh(jac.T @ jac)
    misalignment = 1 - abs(float(v[:, -1] @ q))
    assert misalignment > 1e-6  # a random frame is never exactly the top direction ...
    assert log_sigma[0] - exps[0] > 1e-9  # ... so the exponents differ from log sigma/T
    np.testing.assert_allclose(jnp.sum(exps), jnp.sum(log_sigma), rtol=0, atol=1e-12)


def test_lyapunov_init_step_under_jit_scan_and_vmap(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    ys = jr.normal(getkey(), (2, 3))
    key = getkey()
    solver = cd.LyapunovQR(field, 0.1, 2, "rk4")
    state = solver.init(ys[0], key)
    assert state.frame.shape == (3, 2)
    step = eqx.filter_jit(solver.step)
    for _ in range(5):
        state = step(state)
    np.testing.assert_allclose(state.frame.T @ state.frame, jnp.eye(2), atol=1e-13)
    expected = cd.lyapunov_exponents(field, ys[0], 0.5, num_steps=5, k=2, method="rk4",
                                     key=key)
    np.testing.assert_allclose(solver.exponents(state), expected, rtol=1e-12)
    batched = jax.vmap(
        lambda y: cd.lyapunov_exponents(field, y, 0.5, num_steps=5, k=2, method="rk4",
                                        key=key)
    )(ys)
    np.testing.assert_allclose(batched[0], expected, rtol=1e-12)


# --- Stability (item 7) ---------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [4, 16, 64])
def test_euler_on_rotation_is_unstable_and_grows_exactly(num_steps):
    b, horizon = 3.0, 2.0
    h = horizon / num_steps
    field = _rotation_field(b)
    report = cd.stability_report(field, jnp.ones(2), h)
    assert int(report.num_unstable) == 2 and bool(jnp.all(report.unstable))
    np.testing.assert_allclose(jnp.sort(report.eigenvalues.imag), [-h * b, h * b],
                               atol=1e-14)
    np.testing.assert_allclose(
        report.amplification, np.sqrt(1 + h**2 * b**2), rtol=1e-14
    )
    sigma = _singular_values(cd.EulerResNet(field, num_steps, horizon), jnp.ones(2))
    np.testing.assert_allclose(sigma, (1 + h**2 * b**2) ** (num_steps / 2), rtol=1e-12)


def test_rk4_on_rotation_is_stable_and_nearly_orthogonal():
    b, horizon, num_steps = 3.0, 2.0, 16
    h = horizon / num_steps
    field = _rotation_field(b)
    report = cd.stability_report(field, jnp.ones(2), h, "rk4")
    assert int(report.num_unstable) == 0
    # |R(iy)|^2 = 1 - y^6/72 + y^8/576 for RK4.
    y = h * b
    np.testing.assert_allclose(
        report.amplification, np.sqrt(1 - y**6 / 72 + y**8 / 576), rtol=1e-13
    )
    model = cd.NeuralODE(field, horizon, solver=_ClassicalRK4(), dt0=h)
    sigma = _singular_values(model, jnp.ones(2))
    np.testing.assert_allclose(sigma, report.amplification[0] ** num_steps, rtol=1e-12)
    assert np.all(np.abs(sigma - 1) < 1e-3)
    # Beyond |h b| = 2 sqrt(2) RK4 is unstable too.
    assert bool(jnp.all(cd.stability_report(field, jnp.ones(2), 1.0, "rk4").unstable))


def test_stability_function_boundaries():
    # Euler's region is the unit disc around -1; RK4 meets the imaginary axis at
    # +-2 sqrt(2); RK2 methods share 1 + z + z^2/2.
    circle = -1 + jnp.exp(1j * jnp.linspace(0, 2 * np.pi, 17))
    np.testing.assert_allclose(jnp.abs(cd.stability_function("euler", circle)), 1,
                               rtol=1e-14)
    np.testing.assert_allclose(
        jnp.abs(cd.stability_function("rk4", 2j * np.sqrt(2))), 1, rtol=1e-14
    )
    z = jnp.array([0.3 + 0.2j, -1.1j, -2.0])
    np.testing.assert_allclose(cd.stability_function("heun", z), 1 + z + z**2 / 2)
    np.testing.assert_allclose(cd.stability_function("midpoint", z), 1 + z + z**2 / 2)
    small = jnp.array([1e-2 + 1e-2j])
    np.testing.assert_allclose(cd.stability_function("rk4", small), jnp.exp(small),
                               rtol=1e-11)


def test_stability_region_grid():
    region = cd.stability_region("euler", extent=(-2.5, 0.5, -1.5, 1.5), resolution=301)
    assert region.x.shape == (301,) and region.modulus.shape == (301, 301)
    np.testing.assert_allclose(
        region.modulus[7, 11], abs(1 + region.x[11] + 1j * region.y[7]), rtol=1e-14
    )
    cell = (region.x[1] - region.x[0]) * (region.y[1] - region.y[0])
    area = float(jnp.sum(region.modulus <= 1) * cell)
    np.testing.assert_allclose(area, np.pi, rtol=1e-2)  # the unit disc
    rk4 = cd.stability_region("rk4", resolution=101)
    assert rk4.method == "rk4" and rk4.modulus.shape == (101, 101)
    assert jnp.sum(rk4.modulus <= 1) > jnp.sum(
        cd.stability_region("euler", resolution=101).modulus <= 1
    )


def test_stability_report_nonlinear_field_and_summary(getkey):
    field = cd.MLPField(4, 16, 1, key=getkey())
    y = jr.normal(getkey(), (4,))
    h = 0.7
    report = cd.stability_report(field, y, h, t=0.3)
    eps = 1e-6
    basis = np.eye(4)
    fd = np.stack(
        [(field(0.3, y + eps * e) - field(0.3, y - eps * e)) / (2 * eps)
         for e in basis],
        axis=1,
    )
    expected = np.linalg.eigvals(h * fd)
    np.testing.assert_allclose(np.sort_complex(np.asarray(report.eigenvalues)),
                               np.sort_complex(expected), atol=1e-8)
    # Flagged only where Euler amplifies more than the exact flow |e^z| (log-rate
    # allowance growth_rtol); eigenvalues with Re z > 0 that the flow amplifies too are
    # "growth as the flow".
    z = np.asarray(report.eigenvalues)
    flow = np.maximum(1, np.exp((1 + report.growth_rtol) * z.real))
    np.testing.assert_array_equal(
        report.unstable, np.abs(1 + z) > flow + np.asarray(report.tol)
    )
    text = repr(report)
    assert "euler" in text and f"{int(report.num_unstable)} of 4" in text


# --- layer gradient norms -------------------------------------------------------------


@eqx.filter_jit
def _reference_gradient_norms(model, loss_fn, y):
    """By hand: backpropagate through one layer at a time with `jax.vjp`."""
    ys = model.trajectory(y)
    g = jax.grad(loss_fn)(ys[-1])
    norms = [jnp.linalg.norm(g)]
    for k in reversed(range(model.num_layers)):
        _, vjp = jax.vjp(lambda x: model.step(jnp.asarray(k), x), ys[k])
        (g,) = vjp(g)
        norms.append(jnp.linalg.norm(g))
    return jnp.stack(norms[::-1])


@pytest.mark.parametrize("kind", ["euler", "plain", "highway", "scaled", "attention"])
def test_layer_gradient_norms_match_per_step_vjp(kind, getkey):
    if kind == "attention":  # token-set states (L, D): norms over both axes
        field, y = make_field("attention", getkey())
        model = cd.EulerResNet(field, 3, 1.0)
    else:
        model, y = make_model(kind, getkey())
    target = jr.normal(getkey(), y.shape)

    def loss_fn(out):
        return jnp.sum(jnp.tanh(out) * target)

    norms = cd.layer_gradient_norms(model, loss_fn, y)
    assert norms.shape == (model.num_layers + 1,)
    np.testing.assert_allclose(norms, _reference_gradient_norms(model, loss_fn, y),
                               rtol=1e-12)
    g0 = jax.grad(lambda x: loss_fn(model(x)))(y)
    np.testing.assert_allclose(norms[0], jnp.linalg.norm(g0), rtol=1e-12)


@pytest.mark.slow
def test_layer_gradient_norms_vanish_in_deep_plain_net(getkey):
    key = getkey()
    y = jr.normal(getkey(), (8,))
    loss_fn = lambda out: jnp.sum(out)
    plain = cd.layer_gradient_norms(cd.PlainNet(8, 40, key=key), loss_fn, y)
    euler = cd.layer_gradient_norms(
        cd.EulerResNet(cd.MLPField(8, 16, 1, key=key), 40, 1.0), loss_fn, y
    )
    assert plain[0] < 1e-3 * plain[-1]
    assert euler[0] > 0.1 * euler[-1]


# --- bad input (item 8) ---------------------------------------------------------------


def test_bad_inputs_name_the_argument(getkey):
    field = cd.MLPField(3, 8, 1, key=getkey())
    model = cd.EulerResNet(field, 4, 1.0)
    y, key = jnp.ones(3), getkey()
    cases = [
        (lambda: cd.jacobian_frobenius(model, y, num_probes=0, key=key), ValueError,
         "num_probes"),
        (lambda: cd.jacobian_frobenius(model, y, num_probes=1, key=key), ValueError,
         "num_probes"),
        (lambda: cd.jacobian_frobenius(model, y, num_probes=4.0, key=key), TypeError,
         "num_probes"),
        (lambda: cd.jacobian_frobenius(model, y, num_probes=4, key=3), TypeError,
         "key"),
        (lambda: cd.log_det_jacobian(lambda x, args=None: x[:2], y), ValueError,
         "square"),
        (lambda: cd.lyapunov_exponents(field, y, 1.0, num_steps=4, k=4), ValueError,
         "`k`"),
        (lambda: cd.lyapunov_exponents(field, y, 1.0, num_steps=4, k=0), ValueError,
         "`k`"),
        (lambda: cd.lyapunov_exponents(field, y, 0.0, num_steps=4), ValueError,
         "horizon"),
        (lambda: cd.lyapunov_exponents(field, y, -1.0, num_steps=4), ValueError,
         "horizon"),
        (lambda: cd.lyapunov_exponents(field, y, 1.0, num_steps=0), ValueError,
         "num_steps"),
        (lambda: cd.lyapunov_exponents(field, y, 1.0, num_steps=4, method="rk5"),
         ValueError, "method"),
        (lambda: cd.lyapunov_exponents(field, jnp.ones(4), 1.0, num_steps=4),
         ValueError, "y0"),
        (lambda: cd.lyapunov_exponents(model, y, 1.0, num_steps=4), TypeError, "field"),
        (lambda: cd.LyapunovQR(field, 0.1, 5).init(y, key), ValueError,
         "num_exponents"),
        (lambda: cd.stability_report(field, y, 0.0), ValueError, "step_size"),
        (lambda: cd.stability_report(field, y, -0.1), ValueError, "step_size"),
        (lambda: cd.stability_report(field, y, 0.1, "backward_euler"), ValueError,
         "method"),
        (lambda: cd.stability_report(field, jnp.ones(2), 0.1), ValueError, "`y`"),
        (lambda: cd.stability_region("rk5"), ValueError, "method"),
        (lambda: cd.stability_region("euler", resolution=1), ValueError, "resolution"),
        (lambda: cd.stability_region("euler", extent=(1, 0, 0, 1)), ValueError,
         "extent"),
        (lambda: cd.layer_gradient_norms(cd.NeuralODE(field, 1.0), jnp.sum, y),
         TypeError, "model"),
        (lambda: cd.layer_gradient_norms(model, lambda out: out, y), TypeError,
         "loss_fn"),
        (lambda: cd.layer_gradient_norms(model, jnp.sum, jnp.ones(4)), ValueError,
         "`y`"),
    ]
    for fn, error, match in cases:
        with pytest.raises(error, match=match):
            fn()
