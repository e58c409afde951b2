"""Issue 6: reversible depth -- exact gradients with activation memory constant in N.

MomentumResNet and ReversibleResNet (custom VJP rebuilding activations backwards) and
NeuralODE with `adjoint=cd.ReversibleAdjoint()` (reversible Heun)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd
from contdepth._adjoint.reversible_scan import reconstruction_error, reversible_scan

from .helpers import max_rel_err


DIM = 4


def _momentum(key, num_steps, gamma, memory="reversible"):
    field = cd.MLPField(DIM, 16, 1, time_dependent=True, key=key)
    return cd.MomentumResNet(field, num_steps, 1.0, gamma=gamma, memory=memory)


def _reversible(key, num_steps, memory="reversible"):
    ka, kb = jr.split(key)
    fa = cd.MLPField(DIM // 2, 16, 1, time_dependent=True, key=ka)
    fb = cd.MLPField(DIM // 2, 16, 1, time_dependent=True, key=kb)
    return cd.ReversibleResNet(fa, fb, num_steps, 1.0, memory=memory)


def _scaled_gamma(num_steps):
    # gamma = 1 - h / eps_m with eps_m = 1/4: gamma**-N <= e^4 for every N.
    return 1.0 - 4.0 / num_steps


def _loss(model, y):
    return jnp.sum(jnp.sin(model(y)))


def _grads(model, y):
    """Gradients with respect to the model's arrays and to the input (one pass)."""
    return eqx.filter_grad(lambda my: _loss(*my))((model, y))


def _tree_rel_err(a, b):
    leaves_a = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    leaves_b = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    assert len(leaves_a) == len(leaves_b) > 0
    return max(max_rel_err(x, y) for x, y in zip(leaves_a, leaves_b))


# 1. inverse(forward(x)) == x


@pytest.mark.parametrize("num_steps", [1, 16, 256, 1024])
def test_reversible_resnet_inverse(num_steps, getkey):
    model = _reversible(getkey(), num_steps)
    y = jr.normal(getkey(), (DIM,))
    y_out = model(y)
    assert float(jnp.max(jnp.abs(y_out - y))) > 1e-3  # the map is not the identity
    np.testing.assert_allclose(model.inverse(y_out), y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_steps", [1, 16, 256, 1024])
def test_momentum_resnet_inverse(num_steps, getkey):
    gamma = 0.9 if num_steps <= 16 else _scaled_gamma(num_steps)
    model = _momentum(getkey(), num_steps, gamma)
    x, v = jr.normal(getkey(), (2, DIM))
    x_out, v_out = model.forward_with_velocity(x, v)
    assert float(jnp.max(jnp.abs(x_out - x))) > 1e-3
    x_back, v_back = model.inverse(x_out, v_out)
    np.testing.assert_allclose(x_back, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v_back, v, rtol=0, atol=1e-12)


def test_momentum_drift_grows_like_gamma_to_minus_n(getkey):
    """Inverting the velocity update divides by gamma each step, so the round-off in
    the rebuilt input grows like gamma**-N: log(drift) has slope -log(gamma) in N."""
    gamma = 0.5
    field = cd.MLPField(DIM, 16, 1, key=getkey())
    x = jr.normal(getkey(), (DIM,))
    depths = np.arange(12, 41, 4)
    drifts = []
    for n in depths:
        model = cd.MomentumResNet(field, int(n), 1.0, gamma=gamma)
        z = model.forward_with_velocity(x, jnp.zeros_like(x))
        drifts.append(float(reconstruction_error(model.inverse(*z), (x, jnp.zeros_like(x)))))
    slope = np.polyfit(depths, np.log(drifts), 1)[0]
    print(f"drift slope {slope:.3f} per step, -log(gamma) = {-np.log(gamma):.3f}")
    assert abs(slope - (-np.log(gamma))) < 0.15, (slope, drifts)


# 2. reversible VJP == plain autodiff


@pytest.mark.parametrize("kind", ["momentum", "reversible"])
def test_reversible_gradients_match_store(kind, getkey):
    num_steps = 64
    key = getkey()
    if kind == "momentum":
        make = lambda memory: _momentum(key, num_steps, 0.9, memory)
    else:
        make = lambda memory: _reversible(key, num_steps, memory)
    y = jr.normal(getkey(), (DIM,))
    g_rev, gy_rev = _grads(make("reversible"), y)
    g_ref, gy_ref = _grads(make("store"), y)
    assert _tree_rel_err(g_rev, g_ref) < 1e-10
    assert max_rel_err(gy_rev, gy_ref) < 1e-10


def test_reversible_gradient_flows_to_args(getkey):
    """Gradients reach arrays passed through `args` (here: a shift of the field)."""

    class Shifted(cd.AbstractVectorField):
        inner: cd.MLPField

        def __call__(self, t, y, args=None):
            return self.inner(t, y) + args

        def check_state(self, y, name="y"):
            self.inner.check_state(y, name)

        def lipschitz_bound(self):
            return self.inner.lipschitz_bound()

    field = Shifted(cd.MLPField(DIM, 8, 1, key=getkey()))
    y, shift = jr.normal(getkey(), (2, DIM))
    grads = {
        memory: jax.grad(
            lambda s: _loss_args(cd.MomentumResNet(field, 20, 1.0, gamma=0.8, memory=memory), y, s)
        )(shift)
        for memory in ("reversible", "store")
    }
    assert max_rel_err(grads["reversible"], grads["store"]) < 1e-10


def _loss_args(model, y, args):
    return jnp.sum(jnp.sin(model(y, args)))


def test_velocity_gradient_matches_store(getkey):
    model = _momentum(getkey(), 32, 0.8)
    x, v = jr.normal(getkey(), (2, DIM))

    def loss(v_, m):
        x_out, v_out = m.forward_with_velocity(x, v_)
        return jnp.sum(x_out**2) + jnp.sum(jnp.cos(v_out))

    g_rev = jax.grad(loss)(v, model)
    g_ref = jax.grad(loss)(v, model.with_memory("store"))
    assert max_rel_err(g_rev, g_ref) < 1e-10


def test_bad_inverse_is_caught(getkey):
    """The custom VJP really runs the inverse: a wrong inverse makes the backward pass
    raise instead of returning a wrong gradient."""

    def step(w, k, z):
        return z + 0.1 * jnp.tanh(w * z)

    def wrong_inverse(w, k, z):
        return z - 0.1 * jnp.tanh(w * z) + 1e-3

    w, z0 = jnp.asarray(0.7), jr.normal(getkey(), (3,))
    loss = lambda w_: jnp.sum(reversible_scan(step, wrong_inverse, w_, z0, 10))
    with pytest.raises(eqx.EquinoxRuntimeError, match="drifted"):
        jax.grad(loss)(w)


def test_momentum_drift_raises_instead_of_wrong_gradient(getkey):
    model = _momentum(getkey(), 80, 0.5)  # 0.5**-80 * eps >> sqrt(eps)
    y = jr.normal(getkey(), (DIM,))
    with pytest.raises(eqx.EquinoxRuntimeError, match="gamma"):
        jax.grad(lambda y_: _loss(model, y_))(y)
    # Also when only the parameter gradient is used (training).
    with pytest.raises(eqx.EquinoxRuntimeError, match="gamma"):
        eqx.filter_grad(lambda m: _loss(m, y))(model)
    g = jax.grad(lambda y_: _loss(model.with_memory("store"), y_))(y)
    assert jnp.all(jnp.isfinite(g))


def test_momentum_gamma_zero_is_euler(getkey):
    field = cd.MLPField(DIM, 8, 1, time_dependent=True, key=getkey())
    y = jr.normal(getkey(), (DIM,))
    mom = cd.MomentumResNet(field, 10, 2.0, gamma=0.0, memory="store")
    np.testing.assert_allclose(mom(y), cd.EulerResNet(field, 10, 2.0)(y), rtol=1e-14)


def test_reversible_resnet_preserves_volume(getkey):
    """Additive coupling has unit Jacobian determinant at every depth."""
    model = _reversible(getkey(), 16)
    y = jr.normal(getkey(), (DIM,))
    jac = jax.jacrev(model)(y)
    assert abs(float(jnp.linalg.det(jac)) - 1.0) < 1e-12
    assert float(jnp.max(jnp.abs(jac - jnp.eye(DIM)))) > 1e-3


# Forward mode / Jacobians


@pytest.mark.parametrize("kind", ["momentum", "reversible"])
def test_forward_mode_and_jacobian(kind, getkey):
    model = _momentum(getkey(), 12, 0.9) if kind == "momentum" else _reversible(getkey(), 12)
    y = jr.normal(getkey(), (DIM,))
    # The reversible custom VJP is reverse mode only ...
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jacfwd(model)(y)
    # ... its Jacobian by reverse mode equals forward mode through memory="store".
    jac_rev = cd.jacobian(model, y, mode="rev")
    jac_fwd = cd.jacobian(model.with_memory("store"), y, mode="fwd")
    assert jac_rev.shape == (DIM, DIM)
    assert max_rel_err(jac_rev, jac_fwd) < 1e-12


# 3. memory from XLA's compiled memory analysis


def _temp_bytes(model, y):
    dynamic, static = eqx.partition(model, eqx.is_inexact_array)

    def grad(d, y_):
        return jax.grad(lambda d_: _loss(eqx.combine(d_, static), y_))(d)

    compiled = jax.jit(grad).lower(dynamic, y).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _ode(key, num_steps, adjoint):
    field = cd.MLPField(DIM, 16, 1, key=key)
    return cd.NeuralODE(
        field, 1.0, solver=diffrax.ReversibleHeun(), dt0=1.0 / num_steps,
        max_steps=num_steps, adjoint=adjoint,
    )


def test_memory_constant_in_depth(getkey):
    key = getkey()
    y = jr.normal(getkey(), (DIM,))
    makers = {
        "euler": lambda n: cd.EulerResNet(cd.MLPField(DIM, 16, 1, key=key), n, 1.0),
        "momentum_store": lambda n: _momentum(key, n, 0.9, "store"),
        "momentum": lambda n: _momentum(key, n, 0.9),
        "reversible": lambda n: _reversible(key, n),
        "ode_reversible": lambda n: _ode(key, n, cd.ReversibleAdjoint()),
    }
    temp = {name: {n: _temp_bytes(make(n), y) for n in (16, 1024)} for name, make in makers.items()}
    print(temp)
    for name in ("momentum", "reversible", "ode_reversible"):
        assert temp[name][1024] <= 1.5 * temp[name][16], (name, temp[name])
    # Plain backprop stores every step: roughly linear in N (1024 / 16 = 64).
    for name in ("euler", "momentum_store"):
        assert temp[name][1024] >= 16 * temp[name][16], (name, temp[name])


# 4. NeuralODE: exact reversible adjoint vs checkpointed backprop; backsolve reported


def test_reversible_adjoint_matches_checkpoint(getkey):
    key = getkey()
    y = jr.normal(getkey(), (DIM,))
    num_steps = 64
    models = {
        name: _ode(key, num_steps, adjoint)
        for name, adjoint in [
            ("checkpoint", diffrax.RecursiveCheckpointAdjoint()),
            ("reversible", cd.ReversibleAdjoint()),
            ("backsolve", diffrax.BacksolveAdjoint()),
        ]
    }
    ref_out = models["checkpoint"](y)
    np.testing.assert_allclose(models["reversible"](y), ref_out, rtol=1e-12, atol=1e-14)
    g_ref, gy_ref = _grads(models["checkpoint"], y)
    g_rev, gy_rev = _grads(models["reversible"], y)
    err_rev = max(_tree_rel_err(g_rev, g_ref), max_rel_err(gy_rev, gy_ref))
    assert err_rev < 1e-8
    g_bs, gy_bs = _grads(models["backsolve"], y)
    err_bs = max(_tree_rel_err(g_bs, g_ref), max_rel_err(gy_bs, gy_ref))
    print(f"ReversibleHeun, {num_steps} steps: reversible adjoint rel. error {err_rev:.1e}, "
          f"backsolve rel. error {err_bs:.1e}")
    # Backsolve is approximate (continuous adjoint solved backwards) but convergent.
    assert np.isfinite(err_bs) and err_bs < 1e-2


def test_reversible_adjoint_fallbacks_and_jacobian(getkey):
    model = _ode(getkey(), 32, cd.ReversibleAdjoint())
    y = jr.normal(getkey(), (DIM,))
    ts = jnp.linspace(0.0, 1.0, 5)
    traj = model.trajectory(y, ts)
    np.testing.assert_allclose(traj[-1], model(y), rtol=1e-12, atol=1e-14)
    jac_rev = cd.jacobian(model, y, mode="rev")
    jac_fwd = cd.jacobian(model, y, mode="fwd")  # swapped to diffrax.ForwardMode
    assert max_rel_err(jac_rev, jac_fwd) < 1e-10


def test_reversible_adjoint_nonfinite_raises():
    # h * lambda = 1000: reversible Heun blows up (it is stable only for |h lambda| < 1)
    # and overflows within 200 steps.
    field = cd.LinearField(jnp.diag(jnp.asarray([1000.0, 0.0, 0.0, 0.0])))
    blowup = cd.NeuralODE(
        field, 200.0, solver=diffrax.ReversibleHeun(), dt0=1.0, adjoint=cd.ReversibleAdjoint()
    )
    with pytest.raises(eqx.EquinoxRuntimeError, match="NaN or inf"):
        blowup(jnp.ones(DIM))


# 5. training


def test_momentum_learns_digits():
    train, test = cd.datasets.digits()
    model = cd.make_classifier(
        "momentum", num_features=64, num_classes=10, dim=32, width=32, depth=8,
        key=jr.PRNGKey(0),
    )
    assert isinstance(model.body, cd.MomentumResNet) and model.body.memory == "reversible"
    model, history = cd.train(
        model, train, steps=300, batch_size=128, key=jr.PRNGKey(1),
        optimizer=optax.adam(3e-3), progress=False,
    )
    result = cd.evaluate(model, test)
    print(result)
    assert result["accuracy"] >= 0.95, result


# 6. bad input


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_bad_gamma_value(gamma, getkey):
    field = cd.MLPField(DIM, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"`gamma` must be a real number in \[0, 1\)"):
        cd.MomentumResNet(field, 4, 1.0, gamma=gamma)


@pytest.mark.parametrize("gamma", ["0.5", None, True, jnp.asarray([0.5])])
def test_bad_gamma_type(gamma, getkey):
    field = cd.MLPField(DIM, 8, 1, key=getkey())
    with pytest.raises(TypeError, match="`gamma`"):
        cd.MomentumResNet(field, 4, 1.0, gamma=gamma)


def test_bad_momentum_inputs(getkey):
    field = cd.MLPField(DIM, 8, 1, key=getkey())
    with pytest.raises(ValueError, match="gamma > 0"):
        cd.MomentumResNet(field, 4, 1.0, gamma=0.0)
    with pytest.raises(TypeError, match="gamma"):
        cd.MomentumResNet(field, 4, 1.0)  # gamma is required
    with pytest.raises(ValueError, match="`memory` must be 'reversible'"):
        cd.MomentumResNet(field, 4, 1.0, gamma=0.5, memory="checkpoint")
    with pytest.raises(ValueError, match="num_steps"):
        cd.MomentumResNet(field, 0, 1.0, gamma=0.5)
    model = cd.MomentumResNet(field, 4, 1.0, gamma=0.5)
    with pytest.raises(ValueError, match="same shape"):
        model.forward_with_velocity(jnp.zeros(DIM), jnp.zeros(DIM, dtype=jnp.float32))
    with pytest.raises(ValueError, match="MLPField"):
        model(jnp.zeros(DIM + 1))


def test_bad_reversible_inputs(getkey):
    fa = cd.MLPField(2, 8, 1, key=getkey())
    with pytest.raises(TypeError, match="`field_b`"):
        cd.ReversibleResNet(fa, "not a field", 4, 1.0)
    with pytest.raises(ValueError, match="`memory`"):
        cd.ReversibleResNet(fa, fa, 4, 1.0, memory=None)
    model = cd.ReversibleResNet(fa, fa, 4, 1.0)
    with pytest.raises(ValueError, match=r"shape \(5,\).*even size"):
        model(jnp.zeros(5))
    with pytest.raises(ValueError, match="even size"):
        model(jnp.zeros(()))
    with pytest.raises(ValueError, match=r"y\[\.\.\., half:\]"):
        model(jnp.zeros(6))  # even, but the halves do not fit the (2,) fields
    with pytest.raises(TypeError, match="floating-point"):
        model(jnp.zeros(4, dtype=jnp.int32))
    # The classifier checks the body at construction: an odd encoder output is refused.
    with pytest.raises(ValueError, match="even size"):
        cd.Classifier(
            eqx.nn.Linear(3, 5, key=getkey()), model, eqx.nn.Linear(5, 2, key=getkey())
        )


def test_bad_reversible_adjoint_setups(getkey):
    field = cd.MLPField(DIM, 8, 1, key=getkey())
    with pytest.raises(ValueError, match="ReversibleHeun"):
        cd.NeuralODE(field, 1.0, dt0=0.1, adjoint=cd.ReversibleAdjoint())
    with pytest.raises(ValueError, match="dt0"):
        cd.NeuralODE(field, 1.0, solver=diffrax.ReversibleHeun(), adjoint=cd.ReversibleAdjoint())
    with pytest.raises(ValueError, match="no adaptive `stepsize_controller`"):
        cd.NeuralODE(
            field, 1.0, solver=diffrax.ReversibleHeun(), dt0=0.1, adjoint=cd.ReversibleAdjoint(),
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
        )
    # A `dt0` that does not divide the horizon: diffrax's own last steps, rebuilt exactly.
    y = jnp.linspace(-1.0, 1.0, DIM)
    uneven = cd.NeuralODE(field, 1.0, solver=diffrax.ReversibleHeun(), dt0=0.3,
                          adjoint=cd.ReversibleAdjoint())
    checkpoint = uneven.replace(adjoint=diffrax.RecursiveCheckpointAdjoint())
    g, g_ref = (jax.grad(lambda y, m=m: jnp.sum(m(y) ** 2))(y) for m in (uneven, checkpoint))
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)
