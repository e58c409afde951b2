"""Prescriptive errors for failed Neural ODE solves, at no cost to a successful one.

A solve is classified from diffrax's result code and two `isfinite` tests; nothing
else runs on the success path (no extra field evaluations, a handful of compiled
messages). Only once a solve has failed is the cause explained in detail:

- called eagerly (concrete inputs), the failure is diagnosed on the host: the exact
    stopping time, the step counts, and a few field evaluations just past the last
    accepted point that tell "the field returned NaN/inf" from "the steps collapsed";
- under `jit`/`vmap`/`grad` the message is static (what failed and which knobs to
    turn) and points to `model.diagnose(y, args)` for the rest.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


OK, NONFINITE_INPUT, MAX_STEPS, DT_MIN, OTHER, NONFINITE_OUTPUT = range(6)
#: Only ever produced on the host, by `diagnose`.
NONFINITE_FIELD = 6


class SolveReport(eqx.Module):
    """What the host needs to explain a failure: the code, where the solve stopped
    (last accepted time and state) and diffrax's step counts."""

    code: jax.Array
    t_stop: jax.Array
    y_stop: jax.Array
    num_steps: jax.Array
    num_accepted_steps: jax.Array
    num_rejected_steps: jax.Array


def failure_code(result, y, y_out) -> jax.Array:
    """An int32 scalar: `OK` when the solve succeeded (or stopped at an event) with a
    finite final state. No field evaluations."""
    done = (result == diffrax.RESULTS.successful) | (
        result == diffrax.RESULTS.event_occurred
    )
    code = jnp.where(result == diffrax.RESULTS.max_steps_reached, MAX_STEPS, OTHER)
    code = jnp.where(result == diffrax.RESULTS.dt_min_reached, DT_MIN, code)
    code = jnp.where(
        done, jnp.where(jnp.all(jnp.isfinite(y_out)), OK, NONFINITE_OUTPUT), code
    )
    code = jnp.where(jnp.all(jnp.isfinite(y)), code, NONFINITE_INPUT)
    return code.astype(jnp.int32)


def _knobs(ode) -> str:
    tolerances = (
        f"loosen `rtol`/`atol` (now {ode.rtol:g}/{ode.atol:g}; they must be well above "
        "the state dtype's precision); "
        if ode.rtol is not None
        else "loosen the step-size controller's tolerances; "
    )
    return (
        f"Fixes: raise `max_steps` (now {ode.max_steps}); {tolerances}for a stiff "
        "problem (tiny steps everywhere) use an implicit solver, e.g. "
        "`NeuralODE(..., solver=diffrax.Kvaerno5())`."
    )


def _what(code: int, ode) -> str:
    if code == NONFINITE_INPUT:
        return (
            "the initial state `y` contains NaN or inf, so the solve cannot start (an "
            "adaptive solver would reject every step). Check the data and the encoder; "
            "pass `throw=False` to get NaN outputs and a result code instead."
        )
    if code == NONFINITE_FIELD:
        return (
            "the vector field returned NaN or inf there, so the step-size controller "
            f"rejected every step until `max_steps` ({ode.max_steps}) ran out. Raising "
            "`max_steps` will not help: look for NaN/inf in the field's weights or "
            "`args`, or a singularity of the field at this time."
        )
    if code == MAX_STEPS:
        return (
            f"the maximum number of solver steps (`max_steps={ode.max_steps}`) was "
            "reached: the step size collapsed (a stiff or rapidly-varying field, or "
            "tolerances too tight for the dtype) or the horizon needs more steps. "
            + _knobs(ode)
        )
    if code == DT_MIN:
        return "the step size fell below the controller's `dtmin`. " + _knobs(ode)
    if code == OTHER:
        return (
            "the diffrax solver reported a failure other than `max_steps` (inspect it "
            "with `model.solve(y, throw=False).result`). " + _knobs(ode)
        )
    if code == NONFINITE_OUTPUT:
        fixed = (
            f"With the fixed step `dt0={ode.dt0}`, reduce `dt0` or use an adaptive "
            "solver."
            if ode.dt0 is not None
            else "The state blew up: check the field for finite-time blow-up."
        )
        return (
            "the solve reached the horizon but the final state contains NaN or inf. "
            + fixed
            + " Pass `throw=False` to receive the non-finite output instead."
        )
    raise AssertionError(code)


_UNDER_JIT = (
    " (Under jit/vmap/grad the stopping time and cause are not computed, so that a "
    "successful solve pays nothing for them; a vector field returning NaN/inf also "
    "ends "
    "in `max_steps`. Call `model.diagnose(y, args)` outside jit for the exact time and "
    "cause.)"
)


def message(code: int, ode) -> str:
    """The message for `code` without a stopping time."""
    return f"contdepth.NeuralODE solve failed: {_what(code, ode)}"


def raise_if_failed(ode, x, code):
    """Under tracing: `x` unchanged, or an `eqx.EquinoxRuntimeError` for `code` (one
    static message per code)."""
    messages = [
        message(c, ode) + ("" if c == NONFINITE_INPUT else _UNDER_JIT)
        for c in range(1, NONFINITE_OUTPUT + 1)
    ]
    return eqx.branched_error_if(x, code != OK, jnp.maximum(code - 1, 0), messages)


def _field_nonfinite_near(ode, t, y, args) -> bool:
    # Tells "the field is NaN/inf just ahead" from "tiny steps": a few explicit-Euler
    # probes from the last accepted point (every attempted step there was rejected).
    f0 = ode.field(t, y, args)
    bad = not bool(jnp.all(jnp.isfinite(f0)))
    f0 = jnp.where(jnp.isfinite(f0), f0, 0)
    for frac in (1e-9, 1e-6, 1e-3):
        dt = jnp.asarray(frac * ode.horizon, t.dtype)
        t_probe = jnp.minimum(t + dt, ode.horizon)
        f = ode.field(t_probe, (y + dt * f0).astype(y.dtype), args)
        bad = bad or not bool(jnp.all(jnp.isfinite(f)))
    return bad


def explain(ode, args, report: SolveReport) -> str | None:
    """On the host, after a solve: `None` if it succeeded, else the full explanation
    with the exact stopping time, step counts and (for `max_steps`) whether the field
    returned NaN/inf."""
    code = int(report.code)
    if code == OK:
        return None
    if code == MAX_STEPS and _field_nonfinite_near(
        ode, report.t_stop, report.y_stop, args
    ):
        code = NONFINITE_FIELD
    t_stop = float(np.asarray(report.t_stop))
    where = (
        f"t = {t_stop:.6g} (horizon {ode.horizon:g}) after {int(report.num_steps)} "
        "steps "
        f"({int(report.num_accepted_steps)} accepted, {int(report.num_rejected_steps)} "
        "rejected)"
    )
    return f"contdepth.NeuralODE solve failed at {where}: {_what(code, ode)}"
