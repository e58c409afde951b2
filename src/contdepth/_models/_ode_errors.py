"""Prescriptive errors for failed Neural ODE solves.

A failed solve is classified into one of a few causes, each with a message that says
what happened, at what time `t`, and which knob to turn. Outside `jit` the message
carries the exact stopping time and step counts. Under `jit` messages must be static
strings (`eqx.branched_error_if`), so the stopping time is reported to 1% of the
horizon by choosing among pre-formatted messages.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp


_OK, _NONFINITE_FIELD, _MAX_STEPS, _DT_MIN, _OTHER, _NONFINITE_OUTPUT = range(6)
_NUM_BUCKETS = 101  # t / horizon in {0, 0.01, ..., 1}


def _what(code: int, ode) -> str:
    knobs = (
        "Fixes: raise `max_steps` (now {ms}); loosen `rtol`/`atol` (now {rtol:g}/"
        "{atol:g}; they must be well above the state dtype's precision); for a stiff "
        "problem (tiny steps everywhere) use an implicit solver, e.g. "
        "`NeuralODE(..., solver=diffrax.Kvaerno5())`."
    ).format(ms=ode.max_steps, rtol=ode.rtol, atol=ode.atol)
    if code == _NONFINITE_FIELD:
        return (
            "the vector field returned NaN or inf there, so the step-size controller "
            f"rejected every step until `max_steps` ({ode.max_steps}) ran out. Raising "
            "`max_steps` will not help: look for NaN/inf in the field's weights or "
            "`args`, or a singularity of the field at this time."
        )
    if code == _MAX_STEPS:
        return (
            f"the maximum number of solver steps (`max_steps={ode.max_steps}`) was "
            "reached: the step size collapsed (a stiff or rapidly-varying field, or "
            "tolerances too tight for the dtype) or the horizon needs more steps. " + knobs
        )
    if code == _DT_MIN:
        return "the step size fell below the controller's `dtmin`. " + knobs
    if code == _OTHER:
        return (
            "the diffrax solver reported a failure other than `max_steps` (inspect it "
            "with `model.solve_with_result(y)`). " + knobs
        )
    if code == _NONFINITE_OUTPUT:
        fixed = (
            f"With the fixed step `dt0={ode.dt0}`, reduce `dt0` or use an adaptive solver."
            if ode.dt0 is not None
            else "The state blew up: check the field for finite-time blow-up."
        )
        return (
            "the solve reached the horizon but the final state contains NaN or inf. "
            + fixed
            + " Pass `throw=False` to receive the non-finite output instead."
        )
    raise AssertionError(code)


def _message(code: int, ode, where: str) -> str:
    return f"contdepth.NeuralODE solve failed at {where}: {_what(code, ode)}"


def nonfinite_input_message(name: str) -> str:
    return (
        f"contdepth.NeuralODE: the initial state `{name}` contains NaN or inf, so the "
        "solve cannot start (an adaptive solver would reject every step). Check the data "
        "and the encoder; pass `throw=False` to get NaN outputs and a result code instead."
    )


def _field_nonfinite_near(ode, t, y, args):
    # Tells "the field is NaN/inf just ahead" from "tiny steps": a few explicit-Euler
    # probes from the last accepted point (every attempted step there was rejected).
    f0 = ode.field(t, y, args)
    bad = ~jnp.all(jnp.isfinite(f0))
    f0 = jnp.where(jnp.isfinite(f0), f0, 0)
    for frac in (1e-9, 1e-6, 1e-3):
        dt = jnp.asarray(frac * ode.horizon, t.dtype)
        t_probe = jnp.minimum(t + dt, ode.horizon)
        f = ode.field(t_probe, (y + dt * f0).astype(y.dtype), args)
        bad = bad | ~jnp.all(jnp.isfinite(f))
    return bad


def failure_code(ode, sol_result, t_stop, y_stop, y_out, args):
    """Classify a solve: an int32 scalar, `0` when successful and finite."""
    ok = diffrax.is_successful(sol_result)
    max_steps = sol_result == diffrax.RESULTS.max_steps_reached
    field_bad = _field_nonfinite_near(ode, t_stop, y_stop, args)
    out_bad = ~jnp.all(jnp.isfinite(y_out))
    code = jnp.where(max_steps, jnp.where(field_bad, _NONFINITE_FIELD, _MAX_STEPS), _OTHER)
    code = jnp.where(sol_result == diffrax.RESULTS.dt_min_reached, _DT_MIN, code)
    code = jnp.where(ok, jnp.where(out_bad, _NONFINITE_OUTPUT, _OK), code)
    return code.astype(jnp.int32)


def raise_if_failed(ode, x, code, t_stop, stats):
    """Return `x` unchanged, or raise an `eqx.EquinoxRuntimeError` explaining `code`."""
    horizon = ode.horizon
    if not isinstance(code, jax.core.Tracer) and not isinstance(t_stop, jax.core.Tracer):
        c = int(code)
        if c == _OK:
            return x
        steps = (
            f" after {int(stats['num_steps'])} steps ("
            f"{int(stats['num_accepted_steps'])} accepted, "
            f"{int(stats['num_rejected_steps'])} rejected)"
        )
        where = f"t = {float(t_stop):.6g} (horizon {horizon:g}){steps}"
        return eqx.error_if(x, jnp.asarray(True), _message(c, ode, where))
    frac = jnp.clip(t_stop / horizon, 0.0, 1.0)
    bucket = jnp.round(frac * (_NUM_BUCKETS - 1)).astype(jnp.int32)
    index = jnp.maximum(code - 1, 0) * _NUM_BUCKETS + bucket
    msgs = []
    for c in range(1, _NONFINITE_OUTPUT + 1):
        for b in range(_NUM_BUCKETS):
            t = horizon * b / (_NUM_BUCKETS - 1)
            where = (
                f"t ~ {t:.4g} (+- {horizon / (2 * (_NUM_BUCKETS - 1)):.2g}; horizon "
                f"{horizon:g}; the exact time is `model.solve(y, throw=False).ts[-1]`)"
            )
            msgs.append(_message(c, ode, where))
    return eqx.branched_error_if(x, code != _OK, index, msgs)
