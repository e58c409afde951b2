"""`cd.ReversibleAdjoint()` passed to `diffrax.diffeqsolve` directly: exact gradients
(those of `RecursiveCheckpointAdjoint` to round-off), compiled memory flat in the number
of steps, and a clear error for every configuration it does not support."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd

from .helpers import max_rel_err


DIM = 4
REVERSIBLE = cd.ReversibleAdjoint()
CHECKPOINT = diffrax.RecursiveCheckpointAdjoint()


def _tanh_field(t, y, args):
    return args * jnp.tanh(y)


def _solve(field, y0, args, adjoint, *, t0=0.0, t1=1.0, dt0=1 / 16, **kwargs):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.ReversibleHeun(), t0, t1, dt0, y0, args,
        adjoint=adjoint, **kwargs,
    )
    return solution.ys


def _value_and_grads(adjoint, field, y0, args, **kwargs):
    """`(ys, d loss / d (field, y0, args))` in one compiled call."""

    @eqx.filter_jit
    def run(field_y0_args):
        def loss(fya):
            ys = _solve(*fya, adjoint, **kwargs)
            return jnp.sum(jnp.sin(ys) + ys**2), ys

        return eqx.filter_grad(loss, has_aux=True)(field_y0_args)

    grads, ys = run((field, y0, args))
    return ys, grads


def _tree_rel_err(a, b):
    leaves_a = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    leaves_b = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    assert len(leaves_a) == len(leaves_b) > 0
    return max(max_rel_err(x, y) for x, y in zip(leaves_a, leaves_b))


# (a) the same solution and gradients as RecursiveCheckpointAdjoint


TIMES = {
    "16 steps": dict(t0=0.0, t1=1.0, dt0=1 / 16),
    "1 step": dict(t0=0.0, t1=1.0, dt0=1.0),
    # t0 != 0 and dt0 not dividing t1 - t0: diffrax takes one step of dt0, then splits
    # the rest evenly (16 steps in all); the backward pass must rebuild those times.
    "t0=0.5, dt0 not dividing": dict(t0=0.5, t1=2.0, dt0=0.099),
    # Backwards in time, t0 saved too.
    "reversed, t0 saved": dict(
        t0=1.0, t1=-0.5, dt0=-0.05, saveat=diffrax.SaveAt(t0=True, t1=True)
    ),
}


@pytest.mark.parametrize("times", TIMES.values(), ids=TIMES.keys())
def test_mlp_field_matches_checkpoint(times, getkey):
    field = cd.MLPField(DIM, 16, 1, key=getkey())
    y0 = jr.normal(getkey(), (DIM,))
    ys, grads = _value_and_grads(REVERSIBLE, field, y0, None, **times)
    ys_ref, grads_ref = _value_and_grads(CHECKPOINT, field, y0, None, **times)
    np.testing.assert_allclose(ys, ys_ref, rtol=0, atol=1e-14)
    g_field, g_y0, _ = grads
    g_field_ref, g_y0_ref, _ = grads_ref
    err = max(_tree_rel_err(g_field, g_field_ref), max_rel_err(g_y0, g_y0_ref))
    print(f"{times}: max relative gradient difference {err:.1e}")
    assert err < 1e-10


@pytest.mark.parametrize("name", ["16 steps", "t0=0.5, dt0 not dividing"])
def test_lambda_field_with_array_args_matches_checkpoint(name, getkey):
    times = TIMES[name]
    y0, args = jr.normal(getkey(), (2, DIM))
    ys, (_, g_y0, g_args) = _value_and_grads(REVERSIBLE, _tanh_field, y0, args, **times)
    ys_ref, (_, g_y0_ref, g_args_ref) = _value_and_grads(
        CHECKPOINT, _tanh_field, y0, args, **times
    )
    np.testing.assert_allclose(ys, ys_ref, rtol=0, atol=1e-14)
    err = max(max_rel_err(g_y0, g_y0_ref), max_rel_err(g_args, g_args_ref))
    print(f"{times}: max relative gradient difference {err:.1e}")
    assert err < 1e-10


# (b) compiled memory of the gradient: flat in the number of steps


def _temp_bytes(adjoint, field, y0, num_steps):
    dynamic, static = eqx.partition(field, eqx.is_inexact_array)

    def grad(d, y):
        def loss(d_):
            ys = _solve(
                eqx.combine(d_, static), y, None, adjoint, dt0=1 / num_steps,
                max_steps=num_steps,
            )
            return jnp.sum(jnp.sin(ys))

        return jax.grad(loss)(d)

    compiled = jax.jit(grad).lower(dynamic, y0).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_flat_in_steps(getkey):
    # A state of 16 so that checkpointed activations are visible above the fixed cost.
    field = cd.MLPField(16, 32, 1, key=getkey())
    y0 = jr.normal(getkey(), (16,))
    temp = {
        name: {n: _temp_bytes(adjoint, field, y0, n) for n in (16, 1024)}
        for name, adjoint in [("reversible", REVERSIBLE), ("checkpoint", CHECKPOINT)]
    }
    print(temp)
    assert temp["reversible"][1024] <= 1.5 * temp["reversible"][16], temp
    assert temp["checkpoint"][1024] > 2 * temp["checkpoint"][16], temp


# (c) unsupported configurations: a clear error at trace time, never a fallback


def _unsupported_cases():
    """`{name: (diffeqsolve overrides, error type, message pattern)}`."""
    ode = diffrax.ODETerm(_tanh_field)
    brownian = diffrax.VirtualBrownianTree(
        0.0, 1.0, tol=1e-3, shape=(DIM,), key=jr.PRNGKey(0)
    )
    sde = diffrax.ControlTerm(lambda t, y, args: jnp.eye(DIM), brownian)
    pid = diffrax.PIDController(rtol=1e-6, atol=1e-6)
    step_to = diffrax.StepTo(jnp.linspace(0.0, 1.0, 5))
    event = diffrax.Event(lambda t, y, args, **kwargs: t > 0.5)
    saveats = {
        "ts": diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 3)),
        "steps": diffrax.SaveAt(steps=True),
        "dense": diffrax.SaveAt(t1=True, dense=True),
        "fn": diffrax.SaveAt(t1=True, fn=lambda t, y, args: y**2),
        "subs": diffrax.SaveAt(subs=[diffrax.SubSaveAt(t1=True)] * 2),
    }
    return {
        "solver": (dict(solver=diffrax.Heun()), ValueError, r"solver=Heun\(\)"),
        "adaptive": (
            dict(stepsize_controller=pid, dt0=None),
            ValueError,
            r"stepsize_controller=PIDController.*ConstantStepSize",
        ),
        "step_to": (
            dict(stepsize_controller=step_to, dt0=None),
            ValueError,
            "stepsize_controller=StepTo",
        ),
        **{
            f"saveat_{name}": (dict(saveat=saveat), NotImplementedError, "saveat=")
            for name, saveat in saveats.items()
        },
        "event": (dict(event=event), NotImplementedError, "event=Event"),
        "multi_term": (
            dict(terms=diffrax.MultiTerm(ode, ode)), NotImplementedError, "MultiTerm"
        ),
        "sde": (
            dict(terms=diffrax.MultiTerm(ode, sde)), NotImplementedError, "MultiTerm"
        ),
        "control_term": (dict(terms=sde), NotImplementedError, "terms=ControlTerm"),
    }


@pytest.mark.parametrize("case", _unsupported_cases().keys())
def test_unsupported_configurations_raise(case):
    overrides, error, match = _unsupported_cases()[case]
    kwargs = dict(
        terms=diffrax.ODETerm(_tanh_field), solver=diffrax.ReversibleHeun(), t0=0.0,
        t1=1.0, dt0=0.1, y0=jnp.ones(DIM), args=jnp.ones(DIM), adjoint=REVERSIBLE,
    )
    kwargs.update(overrides)
    with pytest.raises(error, match=match) as info:
        diffrax.diffeqsolve(**kwargs)
    assert "RecursiveCheckpointAdjoint()" in str(info.value)


def test_forward_mode_raises():
    """A custom VJP cannot be pushed forward: JAX's own error (the docstring points to
    `diffrax.ForwardMode()`)."""
    y0, args = jnp.ones(DIM), jnp.ones(DIM)
    solve = lambda y: _solve(_tanh_field, y, args, REVERSIBLE)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(solve, (y0,), (y0,))
    # diffrax.ForwardMode() is the fix.
    jax.jvp(lambda y: _solve(_tanh_field, y, args, diffrax.ForwardMode()), (y0,), (y0,))


# (d) the drift check


def test_drift_raises_instead_of_wrong_gradient():
    # y' = -40 y on [0, 1]: undoing the steps integrates backwards in time, amplifying
    # round-off by about e^40, so the rebuilt y0 is garbage.
    decay = lambda t, y, args: -args * y
    loss = lambda y: jnp.sum(_solve(decay, y, 40.0, REVERSIBLE, dt0=1 / 64))
    y0 = jnp.ones(DIM)
    assert jnp.all(jnp.isfinite(eqx.filter_jit(loss)(y0)))
    with pytest.raises(eqx.EquinoxRuntimeError, match="drifted"):
        eqx.filter_jit(jax.grad(loss))(y0)
