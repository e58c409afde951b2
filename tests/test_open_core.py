"""Open core: any callable is a field, every diffrax option reaches `NeuralODE`, and a
successful solve costs what `diffrax.diffeqsolve` costs."""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd


A = jnp.array([[-0.5, 1.2, 0.0], [-0.8, -0.3, 0.4], [0.2, -0.6, -0.1]])


class UserField(eqx.Module):
    """A user's field: an `eqx.Module` that does not subclass `AbstractVectorField`."""

    matrix: jax.Array

    def __call__(self, t, y, args):
        return self.matrix @ y


def _matmul(matrix, t, y, args):
    return matrix @ y


CALLABLES = {
    "lambda": lambda t, y, args: A @ y,
    "module": UserField(A),
    "partial": functools.partial(_matmul, A),
}


@pytest.fixture
def y():
    return jnp.array([1.0, -0.5, 0.25])


@pytest.mark.parametrize("kind", CALLABLES)
def test_any_callable_field_equals_the_contdepth_class(kind, y):
    field, reference = CALLABLES[kind], cd.LinearField(A)
    pairs = [
        (cd.EulerResNet(field, 8, 1.0), cd.EulerResNet(reference, 8, 1.0)),
        (cd.NeuralODE(field, 1.0, rtol=1e-10, atol=1e-12),
         cd.NeuralODE(reference, 1.0, rtol=1e-10, atol=1e-12)),
        (cd.MomentumResNet(field, 8, 1.0, gamma=0.5),
         cd.MomentumResNet(reference, 8, 1.0, gamma=0.5)),
        (cd.ScaledResidualNet(field, 4, alpha=0.25), cd.ScaledResidualNet(reference, 4, alpha=0.25)),
        (cd.EulerResNet(cd.PiecewiseField([field, field], 1.0), 4, 1.0),
         cd.EulerResNet(cd.PiecewiseField([reference, reference], 1.0), 4, 1.0)),
    ]
    for model, ref in pairs:
        np.testing.assert_allclose(model(y), ref(y), rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            cd.jacobian(model, y), cd.jacobian(ref, y), rtol=0, atol=1e-12
        )
    euler, euler_ref = pairs[0]
    np.testing.assert_allclose(
        cd.step_jacobians(euler, y), cd.step_jacobians(euler_ref, y), atol=1e-12
    )
    lyap = cd.lyapunov_exponents(field, y, 2.0, num_steps=40, method="rk4")
    lyap_ref = cd.lyapunov_exponents(reference, y, 2.0, num_steps=40, method="rk4")
    np.testing.assert_allclose(lyap, lyap_ref, rtol=0, atol=1e-12)
    report = cd.stability_report(field, y, 0.3, "euler")
    report_ref = cd.stability_report(reference, y, 0.3, "euler")
    np.testing.assert_allclose(report.amplification, report_ref.amplification, atol=1e-12)
    assert int(report.num_unstable) == int(report_ref.num_unstable)


def test_reversible_resnet_takes_callables(y):
    f_a, f_b = (lambda t, z, args: jnp.tanh(z)), (lambda t, z, args: -z)
    model = cd.ReversibleResNet(f_a, f_b, 6, 1.0)
    ref = cd.ReversibleResNet(
        _Tanh(), cd.LinearField(-jnp.eye(2)), 6, 1.0
    )
    z = jnp.concatenate([y, jnp.array([0.1])])
    np.testing.assert_allclose(model(z), ref(z), atol=1e-12)
    g = jax.grad(lambda z: jnp.sum(model(z) ** 2))(z)  # the reversible custom VJP
    g_ref = jax.grad(lambda z: jnp.sum(ref.with_memory("store")(z) ** 2))(z)
    np.testing.assert_allclose(g, g_ref, atol=1e-12)


class _Tanh(eqx.Module):
    def __call__(self, t, z, args):
        return jnp.tanh(z)


def test_args_reach_a_callable_field(y):
    field = lambda t, y, args: args["rate"] * y  # noqa: E731
    model = cd.EulerResNet(field, 10, 1.0)
    out = model(y, {"rate": jnp.asarray(-1.0)})
    np.testing.assert_allclose(out, (1 - 0.1) ** 10 * y, atol=1e-14)
    ode = cd.NeuralODE(field, 1.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ode(y, {"rate": jnp.asarray(-1.0)}), jnp.exp(-1.0) * y,
                               rtol=1e-8)


def test_lipschitz_bound_is_an_optional_capability(y):
    np.testing.assert_allclose(
        cd.lipschitz_bound(cd.LinearField(A)), np.linalg.norm(np.asarray(A), 2), rtol=1e-12
    )
    for field in CALLABLES.values():
        assert float(cd.lipschitz_bound(field)) == np.inf
    with pytest.raises(ValueError, match=r"`cd.lipschitz_bound\(field\)` is inf.*pass a number"):
        cd.ScaledResidualNet(CALLABLES["lambda"], 3, alpha="nonexpansive", beta=0.5)
    pieces = cd.PiecewiseField([cd.LinearField(A), CALLABLES["lambda"]], 1.0)
    assert float(cd.lipschitz_bound(pieces)) == np.inf


def test_callable_field_shape_and_dtype_errors(y):
    with pytest.raises(ValueError, match=r"returned shape \(2,\) and dtype float64 for `y`"):
        cd.NeuralODE(lambda t, y, args: y[:2], 1.0)(y)
    with pytest.raises(ValueError, match=r"dtype float64 for `y` of shape \(3,\) and dtype float32"):
        cd.EulerResNet(lambda t, y, args: A @ y, 2, 1.0)(y.astype(jnp.float32))
    with pytest.raises(TypeError, match=r"Calling the vector field lambda as `f\(t, y, args\)`"):
        cd.EulerResNet(lambda t, y, args: jnp.ones((4, 4)) @ y, 2, 1.0)(y)


def _ode_pair(y, **kw):
    field = cd.MLPField(3, 16, 1, key=jr.PRNGKey(3))
    return field, cd.NeuralODE(field, 1.0, **kw)


def test_any_stepsize_controller_matches_diffrax(y):
    controller = diffrax.PIDController(rtol=1e-8, atol=1e-10, pcoeff=0.3, icoeff=0.4)
    field, ode = _ode_pair(y, stepsize_controller=controller)
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 1.0, None, y,
        stepsize_controller=controller, max_steps=4096,
    )
    np.testing.assert_allclose(ode(y), ref.ys[-1], rtol=0, atol=1e-12)
    assert int(ode.solve(y).stats["num_steps"]) == int(ref.stats["num_steps"])
    assert ode.rtol == 1e-8 and ode.atol == 1e-10
    with pytest.raises(ValueError, match=r"Pass the tolerances to the step-size controller"):
        cd.NeuralODE(field, 1.0, rtol=1e-3, stepsize_controller=controller)
    with pytest.raises(TypeError, match=r"`stepsize_controller` must be a diffrax step size"):
        cd.NeuralODE(field, 1.0, stepsize_controller="pid")
    with pytest.raises(ValueError, match=r"ConstantStepSize\(\)` needs `dt0=`"):
        cd.NeuralODE(field, 1.0, stepsize_controller=diffrax.ConstantStepSize())


def test_event_stops_where_diffrax_stops(y):
    field = lambda t, y, args: jnp.array([1.0, 0.0, 0.0])  # noqa: E731
    event = diffrax.Event(lambda t, y, args, **kw: y[0] - 0.5, optx_root_finder())
    ode = cd.NeuralODE(field, 2.0, event=event, rtol=1e-10, atol=1e-12)
    start = jnp.array([0.0, 1.0, 2.0])
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 2.0, None, start, event=event,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
    )
    sol = ode.solve(start)
    np.testing.assert_allclose(sol.ts[-1], ref.ts[-1], atol=1e-12)
    np.testing.assert_allclose(sol.ts[-1], 0.5, atol=1e-10)
    np.testing.assert_allclose(ode(start), ref.ys[-1], atol=1e-12)
    assert sol.result == diffrax.RESULTS.event_occurred


def optx_root_finder():
    import optimistix as optx

    return optx.Newton(rtol=1e-12, atol=1e-12)


def test_full_solution_for_any_saveat(y):
    field, ode = _ode_pair(y, rtol=1e-10, atol=1e-12)
    ts = jnp.linspace(0.0, 1.0, 5)
    sol = ode.solve(y, saveat=diffrax.SaveAt(ts=ts))
    assert isinstance(sol, diffrax.Solution) and sol.ys.shape == (5, 3)
    np.testing.assert_allclose(sol.ys, ode.trajectory(y, ts), atol=1e-14)
    dense = ode.solve(y, saveat=diffrax.SaveAt(dense=True))
    np.testing.assert_allclose(dense.evaluate(0.5), sol.ys[2], atol=1e-8)


def test_piecewise_jumps_are_told_to_the_controller():
    keys = jr.split(jr.PRNGKey(0), 5)
    field = cd.PiecewiseField([cd.MLPField(3, 16, 1, key=k) for k in keys[:4]], 1.0)
    y = jr.normal(keys[4], (3,))
    sol = cd.NeuralODE(field, 1.0).solve(y)
    blind = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 1.0, None, y,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
    )
    exact = cd.NeuralODE(field, 1.0, rtol=1e-12, atol=1e-14, max_steps=100_000)(y)
    assert int(blind.stats["num_rejected_steps"]) > 20  # without the jump times
    assert int(sol.stats["num_rejected_steps"]) <= 5
    err = float(jnp.max(jnp.abs(sol.ys[-1] - exact)))
    assert err <= 1e-5 * float(jnp.max(jnp.abs(exact)))
    assert err <= float(jnp.max(jnp.abs(blind.ys[-1] - exact)))


def _count(jaxpr, name: str) -> int:
    """Occurrences of primitive `name` in a jaxpr and all its sub-jaxprs."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += _count(sub.jaxpr, name)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += _count(sub, name)
    return total


class SinhField(eqx.Module):
    """One `sinh` per evaluation: its count in a jaxpr counts field evaluations."""

    matrix: jax.Array

    def __call__(self, t, y, args):
        return jnp.sinh(self.matrix @ y)


@pytest.mark.parametrize("solver", [diffrax.Tsit5(), diffrax.Dopri5()])
def test_success_path_evaluates_the_field_as_often_as_diffrax(solver, y):
    field = SinhField(0.3 * A)
    ode = cd.NeuralODE(field, 1.0, solver=solver)

    def plain(field, y):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, 1.0, None, y,
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
            max_steps=4096,
        ).ys[-1]

    def ours(field, y):
        return eqx.tree_at(lambda m: m.field, ode, field)(y)

    for fn in (lambda f: f, lambda f: jax.grad(lambda m, y: jnp.sum(f(m, y) ** 2))):
        n_ours = _count(jax.make_jaxpr(fn(ours))(field, y).jaxpr, "sinh")
        n_plain = _count(jax.make_jaxpr(fn(plain))(field, y).jaxpr, "sinh")
        assert n_plain > 0 and n_ours == n_plain, (n_ours, n_plain)


def test_diagnose_and_replace(y):
    field, ode = _ode_pair(y, rtol=1e-12, atol=1e-12, max_steps=3)
    assert "`max_steps=3`" in ode.diagnose(y)
    assert ode.replace(max_steps=4096).diagnose(y) is None
    quiet = ode.replace(throw=False)
    assert not quiet.throw and quiet.rtol == 1e-12 and quiet.max_steps == 3
    assert bool(jnp.all(jnp.isnan(quiet(y))))
    with pytest.raises(TypeError, match=r"`diagnose` runs on concrete values"):
        jax.jit(lambda y: ode.diagnose(y))(y)
