from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._adjoint.reversible_heun import ReversibleAdjoint
from .._custom_types import Args, State
from .._fields.protocol import (
    ARGS_UNKNOWN,
    check_field,
    check_field_horizon,
    check_field_state,
    jump_times,
)
from .._validation import check_bool, check_positive_float, check_positive_int
from . import _ode_errors
from .base import AbstractDepthModel


_DEFAULT_RTOL, _DEFAULT_ATOL = 1e-5, 1e-7


def _unwrap(controller):
    return (
        controller.controller
        if isinstance(controller, diffrax.ClipStepSizeController)
        else controller
    )


def _is_traced(tree) -> bool:
    """Whether we are inside a JAX transformation: `tree` holds tracers, or an
    operation on constants is staged out (under `jit`/`eval_shape`, every op is)."""
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree)):
        return True
    return isinstance(jnp.zeros(()), jax.core.Tracer)


class NeuralODE(AbstractDepthModel):
    """The continuous-depth model: `y(T)` where `dy/dt = F(t, y, args)`, `y(0) = y`,
    integrated by [`diffrax.diffeqsolve`](https://docs.kidger.site/diffrax/), with
    every diffrax option reachable: solver, step-size controller, adjoint, event,
    `max_steps`, `dt0`, progress meter, and any `saveat` through
    [`contdepth.NeuralODE.solve`][].

    The same field in an [`contdepth.EulerResNet`][] is this model's forward-Euler
    discretisation. A field with `jump_times` (e.g. [`contdepth.PiecewiseField`][]) has
    its switching times passed to adaptive controllers as diffrax's `jump_ts`, so no
    step straddles a discontinuity.

    A failed solve (`max_steps` reached, a step-size collapse, a NaN or inf state)
    raises an `equinox.EquinoxRuntimeError` saying what happened and which knob to turn;
    called eagerly it also gives the exact time `t` and tells a NaN-producing field
    from collapsing steps (see [`contdepth.NeuralODE.diagnose`][]). With `throw=False`
    the output is NaN instead and [`contdepth.NeuralODE.solve_with_result`][] returns
    the diffrax result code. It never returns silently wrong numbers. A successful
    solve pays nothing for this: it evaluates the field exactly as often as
    `diffrax.diffeqsolve` does.

    The solve runs in the state's dtype (float16 states are integrated in float32) and
    returns the state's dtype.

    Reference: Chen et al. 2018, "Neural Ordinary Differential Equations"; Kidger 2021,
    "On Neural Differential Equations".
    """

    field: Callable
    horizon: float = eqx.field(static=True)
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    event: diffrax.Event | None
    progress_meter: diffrax.AbstractProgressMeter
    max_steps: int | None = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    _tolerances: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        field: Callable,
        horizon: float,
        *,
        solver: diffrax.AbstractSolver = diffrax.Tsit5(),
        rtol: float | None = None,
        atol: float | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
        event: diffrax.Event | None = None,
        max_steps: int | None = 4096,
        dt0: float | None = None,
        throw: bool = True,
        progress_meter: diffrax.AbstractProgressMeter = diffrax.NoProgressMeter(),
    ):
        """**Arguments:**

        - `field`: the vector field: any callable `F(t, y, args) -> dy/dt`.
        - `horizon`: the final time `T > 0`.
        - `solver`: any diffrax ODE solver (default `Tsit5`).
        - `rtol`, `atol`: tolerances of the default step-size controller,
            `diffrax.PIDController(rtol, atol)` (defaults `1e-5`, `1e-7`). Not allowed
            together with `stepsize_controller`.
        - `stepsize_controller`: any diffrax step-size controller, e.g.
            `diffrax.PIDController(rtol, atol, pcoeff=0.3, icoeff=0.4, dtmin=...)` or
            `diffrax.ClipStepSizeController(..., step_ts=...)`. Default: the PID
            controller above for adaptive steps, `diffrax.ConstantStepSize()` with
            `dt0`.
        - `adjoint`: how gradients are computed (default
            `RecursiveCheckpointAdjoint`, exact backpropagation through the solver).
            `diffrax.BacksolveAdjoint()` is O(1)-memory but approximate;
            [`contdepth.ReversibleAdjoint`][] is O(1)-memory and exact (needs
            `solver=diffrax.ReversibleHeun()` and `dt0`).
        - `event`: a `diffrax.Event` that stops the solve early; the model then returns
            the state at the event.
        - `max_steps`: the most solver steps allowed; reaching it is an error.
        - `dt0`: the initial (with `ConstantStepSize`, the constant) step size. `None`
            (default) lets an adaptive controller choose it.
        - `throw`: on a failed solve or a NaN/inf initial or final state, raise
            (default) or return NaN. Either way `solve_with_result` gives the code.
        - `progress_meter`: a diffrax progress meter, e.g.
            `diffrax.TqdmProgressMeter()`.
        """
        self.throw = check_bool("throw", throw)
        self.field = check_field("field", field)
        self.horizon = check_positive_float("horizon", horizon)
        check_field_horizon("field", field, "NeuralODE", self.horizon)
        _check_instance("solver", solver, diffrax.AbstractSolver, "diffrax.Tsit5()")
        _check_instance(
            "adjoint",
            adjoint,
            diffrax.AbstractAdjoint,
            "diffrax.RecursiveCheckpointAdjoint()",
        )
        _check_instance(
            "progress_meter",
            progress_meter,
            diffrax.AbstractProgressMeter,
            "diffrax.TqdmProgressMeter()",
        )
        if event is not None:
            _check_instance("event", event, diffrax.Event, "diffrax.Event(cond_fn)")
        self.solver, self.adjoint, self.event = solver, adjoint, event
        self.progress_meter = progress_meter
        self.max_steps = (
            None if max_steps is None else check_positive_int("max_steps", max_steps)
        )
        self.dt0 = None if dt0 is None else check_positive_float("dt0", dt0)
        self.stepsize_controller, self._tolerances = _controller(
            solver, stepsize_controller, rtol, atol, self.dt0
        )
        if isinstance(adjoint, ReversibleAdjoint):
            adjoint.check(solver, self.dt0, self.stepsize_controller)

    @property
    def rtol(self) -> float | None:
        """The controller's relative tolerance (`None` if it has none)."""
        return _tolerance(self, "rtol")

    @property
    def atol(self) -> float | None:
        """The controller's absolute tolerance (`None` if it has none)."""
        return _tolerance(self, "atol")

    def replace(self, **changes) -> "NeuralODE":
        """A copy with some constructor arguments changed, e.g.
        `model.replace(throw=False)` or `model.replace(rtol=1e-8, atol=1e-10)`."""
        kwargs: dict[str, Any] = dict(
            solver=self.solver,
            adjoint=self.adjoint,
            event=self.event,
            max_steps=self.max_steps,
            dt0=self.dt0,
            throw=self.throw,
            progress_meter=self.progress_meter,
        )
        if self._tolerances is not None:
            kwargs["rtol"], kwargs["atol"] = self._tolerances
        else:
            kwargs["stepsize_controller"] = self.stepsize_controller
        if {"rtol", "atol"} & changes.keys():
            kwargs.pop("stepsize_controller", None)
        if "stepsize_controller" in changes or "dt0" in changes:
            kwargs.pop("rtol", None)
            kwargs.pop("atol", None)
            kwargs.pop("stepsize_controller", None)
        kwargs.update(changes)
        field = kwargs.pop("field", self.field)
        horizon = kwargs.pop("horizon", self.horizon)
        return NeuralODE(field, horizon, **kwargs)

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_field_state(self.field, y, args, name)

    @staticmethod
    def _time_dtype(y):
        # float16 steps cannot meet any useful tolerance: integrate in float32 at least.
        return jnp.promote_types(y.dtype, jnp.float32)

    def controller_for(self, dtype) -> diffrax.AbstractStepSizeController:
        """The step-size controller actually used: `stepsize_controller`, plus the
        field's `jump_times` as `jump_ts` when the controller is adaptive."""
        jumps = jump_times(self.field, dtype)
        controller = self.stepsize_controller
        inner = _unwrap(controller)
        if not jumps or not isinstance(
            inner, diffrax.AbstractAdaptiveStepSizeController
        ):
            return controller
        if isinstance(controller, diffrax.ClipStepSizeController):
            own = (
                () if controller.jump_ts is None else tuple(controller.jump_ts.tolist())
            )
            return diffrax.ClipStepSizeController(
                controller.controller,
                step_ts=controller.step_ts,
                jump_ts=sorted(set(own) | set(jumps)),
                store_rejected_steps=controller.store_rejected_steps,
            )
        # Not clipped, so `inner` is `controller` itself.
        return diffrax.ClipStepSizeController(inner, jump_ts=jumps)

    def solve(
        self,
        y: State,
        args: Args = None,
        *,
        saveat: diffrax.SaveAt | None = None,
        throw: bool | None = None,
    ) -> diffrax.Solution:
        """Solve on `[0, horizon]` and return the full `diffrax.Solution` (with
        `.ts`, `.ys`, `.stats["num_steps"]`, `.result`, ...).

        **Arguments:**

        - `y`: the initial state.
        - `args`: forwarded to the field.
        - `saveat`: any `diffrax.SaveAt` (`ts=`, `steps=True`, `dense=True`, `fn=`,
            `subs=`); default saves only the final state.
        - `throw`: raise diffrax's own error on solver failure; default `self.throw`.
            With `throw=False` inspect `solution.result` (and `solution.ts[-1]`, the
            time reached, with the default `saveat`) yourself.

        **Returns:**

        The `diffrax.Solution` of `diffrax.diffeqsolve` with this model's options.
        """
        self.check_state(y, args=args)
        throw = self.throw if throw is None else check_bool("throw", throw)
        t_dtype = self._time_dtype(y)
        return diffrax.diffeqsolve(
            diffrax.ODETerm(self.field),
            self.solver,
            t0=jnp.asarray(0.0, t_dtype),
            t1=jnp.asarray(self.horizon, t_dtype),
            dt0=self.dt0,
            y0=y,
            args=args,
            saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
            stepsize_controller=self.controller_for(t_dtype),
            adjoint=self.adjoint,
            event=self.event,
            max_steps=self.max_steps,
            throw=throw,
            progress_meter=self.progress_meter,
        )

    def _checked(self, y, args, ts) -> tuple[State, Any]:
        """`(y_T, ys_at_ts)`: failures raised (`throw`; explained on the host when
        called eagerly) or turned into NaN."""
        self.check_state(y, args=args)
        if not _is_traced((self, y, args)):
            if self.throw and not bool(jnp.all(jnp.isfinite(y))):  # no solve needed
                code = _ode_errors.NONFINITE_INPUT
                raise eqx.EquinoxRuntimeError(_ode_errors.message(code, self))
            y_out, ys, report = _solve_compiled(self, y, args, ts)
            message = _ode_errors.explain(self, args, report) if self.throw else None
            if message is not None:
                raise eqx.EquinoxRuntimeError(message)
            return y_out, ys
        y_out, ys, report = _solve_and_report(self, y, args, ts, mask=not self.throw)
        if self.throw:
            y_out, ys = _ode_errors.raise_if_failed(self, (y_out, ys), report.code)
        return y_out, ys

    def diagnose(self, y: State, args: Args = None) -> str | None:
        """Solve (outside `jit`) and explain a failure: `None` if the solve succeeds,
        else the message `model(y)` raises eagerly, with the exact stopping time, the
        step counts and whether the field returned NaN/inf."""
        if _is_traced((self, y, args)):
            raise TypeError(
                "`diagnose` runs on concrete values: call it outside "
                "`jit`/`vmap`/`grad`."
            )
        self.check_state(y, args=args)
        return _ode_errors.explain(self, args, _solve_compiled(self, y, args, None)[2])

    def solve_with_result(
        self, y: State, args: Args = None
    ) -> tuple[State, diffrax.RESULTS]:
        """Solve without raising on solver failure.

        **Returns:**

        `(y_T, result)`: the final state (same dtype as `y`; all NaN when the solve
        failed) and the diffrax result code, `diffrax.RESULTS.successful` or e.g.
        `diffrax.RESULTS.max_steps_reached` (also the code for a NaN/inf state under an
        adaptive solver, whose controller then rejects every step). Test it with
        `diffrax.is_successful(result)`; under `vmap` it is batched.
        """
        self.check_state(y, args=args)
        y_out, _, _, result = _solve(self, y, args, None)
        return y_out, result

    def __call__(self, y: State, args: Args = None) -> State:
        return self._checked(y, args, None)[0]

    def trajectory(
        self, y: State, ts: Float[ArrayLike, " times"], args: Args = None
    ) -> Float[Array, " times *state"]:
        """The solution at the times `ts` (increasing, within `[0, horizon]`), stacked
        along a new first axis.

        With `adjoint=cd.ReversibleAdjoint()` (which saves only the final state) the
        trajectory is differentiated by `diffrax.RecursiveCheckpointAdjoint()`: the
        same numbers and exact gradients, without the O(1) memory."""
        self.check_state(y, args=args)
        ts = _check_times(ts, self.horizon)
        return self._checked(y, args, ts.astype(self._time_dtype(y)))[1]


def _solve(model: NeuralODE, y, args, ts, mask: bool = True):
    """`(y_T, ys_at_ts, report, result)`; with `mask`, outputs are NaN where the solve
    failed (without, they are left for the caller to raise on)."""
    subs = [diffrax.SubSaveAt(t1=True)]
    if ts is not None:
        subs.append(diffrax.SubSaveAt(ts=ts))
    # A single SubSaveAt is passed plainly: `BacksolveAdjoint` refuses `subs=`.
    saveat = diffrax.SaveAt(subs=subs) if len(subs) > 1 else diffrax.SaveAt(t1=True)
    if ts is not None and isinstance(model.adjoint, ReversibleAdjoint):
        model = eqx.tree_at(
            lambda m: m.adjoint, model, diffrax.RecursiveCheckpointAdjoint()
        )
    sol = model.solve(y, args, saveat=saveat, throw=False)
    # One tuple entry per `SubSaveAt`; both are saved (by `saveat`), so not `None`.
    sol_ts: Any = sol.ts if len(subs) > 1 else (sol.ts,)
    sol_ys: Any = sol.ys if len(subs) > 1 else (sol.ys,)
    # On failure the t1 slot holds the last accepted state and time.
    t_stop, y_stop = sol_ts[0][-1], sol_ys[0][-1]
    y_out = y_stop.astype(y.dtype)
    ys = None if ts is None else sol_ys[1].astype(y.dtype)
    code = _ode_errors.failure_code(sol.result, y, y_out)
    report = _ode_errors.SolveReport(
        code,
        t_stop,
        y_stop,
        sol.stats["num_steps"],
        sol.stats["num_accepted_steps"],
        sol.stats["num_rejected_steps"],
    )
    if mask:
        ok = (code == _ode_errors.OK) | (code == _ode_errors.NONFINITE_OUTPUT)
        y_out = jnp.where(ok, y_out, jnp.nan)
        ys = None if ys is None else jnp.where(ok, ys, jnp.nan)
    return y_out, ys, report, sol.result


def _solve_and_report(model, y, args, ts, mask: bool = True):
    return _solve(model, y, args, ts, mask)[:3]


# Eager calls run one compiled program per model structure, then explain on the host.
_solve_compiled = eqx.filter_jit(_solve_and_report)


def _controller(solver, controller, rtol, atol, dt0):
    """The step-size controller and the tolerances it was built from (`None` for a
    user's controller)."""
    if controller is not None:
        if rtol is not None or atol is not None:
            raise ValueError(
                "Pass the tolerances to the step-size controller, not to NeuralODE: "
                "got "
                f"rtol={rtol}, atol={atol} and stepsize_controller="
                f"{type(controller).__name__}(...)."
            )
        _check_instance(
            "stepsize_controller",
            controller,
            diffrax.AbstractStepSizeController,
            "diffrax.PIDController(rtol=1e-5, atol=1e-7)",
        )
        if dt0 is None and isinstance(_unwrap(controller), diffrax.ConstantStepSize):
            raise ValueError(
                "`stepsize_controller=diffrax.ConstantStepSize()` needs `dt0=` (the "
                "constant step size)."
            )
        return controller, None
    rtol = check_positive_float("rtol", _DEFAULT_RTOL if rtol is None else rtol)
    atol = check_positive_float("atol", _DEFAULT_ATOL if atol is None else atol)
    if dt0 is not None:
        return diffrax.ConstantStepSize(), (rtol, atol)
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"`solver` {type(solver).__name__} has no error estimate, so it cannot "
            "choose its own steps: pass `dt0=` (a constant step size) or use an "
            "adaptive solver such as `diffrax.Tsit5()`."
        )
    return diffrax.PIDController(rtol=rtol, atol=atol), (rtol, atol)


def _tolerance(model: NeuralODE, name: str) -> float | None:
    if model._tolerances is not None:
        return model._tolerances[0 if name == "rtol" else 1]
    value = getattr(_unwrap(model.stepsize_controller), name, None)
    return None if value is None or isinstance(value, jax.core.Tracer) else float(value)


def _check_instance(name: str, value, cls, example: str):
    if not isinstance(value, cls):
        kind = cls.__name__.removeprefix("Abstract")
        kind = "".join(f" {c.lower()}" if c.isupper() else c for c in kind).strip()
        raise TypeError(
            f"`{name}` must be a diffrax {kind} such as `{example}`, got "
            f"{type(value).__name__}."
        )


def _check_times(ts, horizon: float):
    try:
        ts = jnp.asarray(ts)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`ts` must be a 1-D array of real times, got {type(ts).__name__}: {e}"
        ) from None
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}."
        )
    if not (
        jnp.issubdtype(ts.dtype, jnp.floating) or jnp.issubdtype(ts.dtype, jnp.integer)
    ):
        raise TypeError(f"`ts` must hold real times, got dtype {ts.dtype}.")
    if not isinstance(ts, jax.core.Tracer):
        # On the host, in NumPy: under an outer `jit`, `jnp` ops on a concrete array
        # captured from outside would be staged out and could not be tested with `if`.
        host = np.asarray(ts)
        bad = (
            not np.all(np.isfinite(host))
            or np.any(np.diff(host) < 0)
            or host[0] < 0
            or host[-1] > horizon
        )
        if bad:
            raise ValueError(
                f"`ts` must be finite, non-decreasing and within [0, {horizon}], "
                f"got {ts}."
            )
    return ts
