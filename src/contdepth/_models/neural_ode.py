import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._adjoint.reversible_heun import ReversibleAdjoint
from .._custom_types import Args, State
from .._fields.base import AbstractVectorField
from .._validation import check_bool, check_positive_float, check_positive_int
from . import _ode_errors
from ._checks import check_field
from .base import AbstractDepthModel


class NeuralODE(AbstractDepthModel):
    """The continuous-depth model: `y(T)` where `dy/dt = F(t, y, args)`, `y(0) = y`,
    integrated by a diffrax solver with adaptive step-size control.

    The same field in an [`contdepth.EulerResNet`][] is this model's forward-Euler
    discretisation. A failed solve (`max_steps` reached, a step-size collapse, a NaN or
    inf state) raises an `equinox.EquinoxRuntimeError` saying what happened, at what
    time `t`, and which knob to turn; with `throw=False` the output is NaN instead and
    [`contdepth.NeuralODE.solve_with_result`][] returns the diffrax result code. It
    never returns silently wrong numbers.

    The solve runs in the state's dtype (float16 states are integrated in float32) and
    returns the state's dtype.

    Reference: Chen et al. 2018, "Neural Ordinary Differential Equations"; Kidger 2021,
    "On Neural Differential Equations".
    """

    field: AbstractVectorField
    horizon: float = eqx.field(static=True)
    solver: diffrax.AbstractSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint
    max_steps: int = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        field: AbstractVectorField,
        horizon: float,
        *,
        solver: diffrax.AbstractSolver = diffrax.Tsit5(),
        rtol: float = 1e-5,
        atol: float = 1e-7,
        adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
        max_steps: int = 4096,
        dt0: float | None = None,
        throw: bool = True,
    ):
        """**Arguments:**

        - `field`: the vector field `F(t, y, args)`.
        - `horizon`: the final time `T > 0`.
        - `solver`: any diffrax ODE solver. Adaptive solvers (default `Tsit5`) use a
            PID controller with `rtol`/`atol`; fixed-step solvers need `dt0`.
        - `rtol`, `atol`: relative and absolute tolerances of the step-size controller.
        - `adjoint`: how gradients are computed (diffrax adjoint; default
            `RecursiveCheckpointAdjoint`, exact backpropagation through the solver).
            `diffrax.BacksolveAdjoint()` is O(1)-memory but approximate;
            [`contdepth.ReversibleAdjoint`][] is O(1)-memory and exact (needs
            `solver=diffrax.ReversibleHeun()` and `dt0`).
        - `max_steps`: the most solver steps allowed; reaching it is an error.
        - `dt0`: a constant step size. `None` (default) means adaptive steps.
        - `throw`: on a failed solve or a NaN/inf initial or final state, raise
            (default) or return NaN. Either way `solve_with_result` gives the code.
        """
        self.throw = check_bool("throw", throw)
        self.field = check_field("field", field)
        self.horizon = check_positive_float("horizon", horizon)
        if not isinstance(solver, diffrax.AbstractSolver):
            raise TypeError(
                f"`solver` must be a diffrax solver such as `diffrax.Tsit5()`, got "
                f"{type(solver).__name__}."
            )
        if not isinstance(adjoint, diffrax.AbstractAdjoint):
            raise TypeError(
                f"`adjoint` must be a diffrax adjoint such as "
                f"`diffrax.RecursiveCheckpointAdjoint()`, got {type(adjoint).__name__}."
            )
        self.solver = solver
        self.rtol = check_positive_float("rtol", rtol)
        self.atol = check_positive_float("atol", atol)
        self.adjoint = adjoint
        self.max_steps = check_positive_int("max_steps", max_steps)
        if dt0 is None:
            if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
                raise ValueError(
                    f"`solver` {type(solver).__name__} has no error estimate, so it cannot "
                    "choose its own steps: pass `dt0=` (a constant step size) or use an "
                    "adaptive solver such as `diffrax.Tsit5()`."
                )
            self.dt0 = None
        else:
            self.dt0 = check_positive_float("dt0", dt0)
        if isinstance(adjoint, ReversibleAdjoint):
            adjoint.check(solver, self.horizon, self.dt0)

    def check_state(self, y: State, name: str = "y") -> None:
        self.field.check_state(y, name)

    def solve(
        self,
        y: State,
        args: Args = None,
        *,
        saveat: diffrax.SaveAt | None = None,
        throw: bool | None = None,
    ) -> diffrax.Solution:
        """Solve on `[0, horizon]` and return the full diffrax `Solution` (with
        `.stats["num_steps"]`, `.result`, ...).

        **Arguments:**

        - `y`: the initial state.
        - `args`: forwarded to the field.
        - `saveat`: a `diffrax.SaveAt`; default saves only the final state.
        - `throw`: raise diffrax's error on solver failure; default `self.throw`. With
            `throw=False` inspect `solution.result` (and `solution.ts[-1]`, the time
            reached, with the default `saveat`) yourself.
        """
        self.check_state(y)
        throw = self.throw if throw is None else check_bool("throw", throw)
        if self.dt0 is None:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        else:
            controller = diffrax.ConstantStepSize()
        return diffrax.diffeqsolve(
            diffrax.ODETerm(self.field),
            self.solver,
            t0=jnp.asarray(0.0, self._time_dtype(y)),
            t1=jnp.asarray(self.horizon, self._time_dtype(y)),
            dt0=self.dt0,
            y0=y,
            args=args,
            saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
            stepsize_controller=controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=throw,
        )

    @staticmethod
    def _time_dtype(y):
        # float16 steps cannot meet any useful tolerance: integrate in float32 at least.
        return jnp.promote_types(y.dtype, jnp.float32)

    def _checked_solve(self, y, args, ts, throw: bool):
        """Solve with the final state always saved; returns `(y_T, ys_at_ts, result)`
        with failures raised (`throw`) or turned into NaN."""
        self.check_state(y)
        if throw:
            y = eqx.error_if(
                y, ~jnp.all(jnp.isfinite(y)), _ode_errors.nonfinite_input_message("y")
            )
        subs = [diffrax.SubSaveAt(t1=True)]
        if ts is not None:
            subs.append(diffrax.SubSaveAt(ts=ts))
        # A single SubSaveAt is passed plainly: `BacksolveAdjoint` refuses `subs=`.
        saveat = diffrax.SaveAt(subs=subs) if len(subs) > 1 else diffrax.SaveAt(t1=True)
        sol = self.solve(y, args, saveat=saveat, throw=False)
        sol_ts, sol_ys = (sol.ts, sol.ys) if len(subs) > 1 else ((sol.ts,), (sol.ys,))
        # On failure the t1 slot holds the last accepted state and time.
        t_stop, y_stop = sol_ts[0][-1], sol_ys[0][-1]
        y_out = y_stop.astype(y.dtype)
        ys = None if ts is None else sol.ys[1].astype(y.dtype)
        if throw:
            code = _ode_errors.failure_code(self, sol.result, t_stop, y_stop, y_out, args)
            y_out, ys = _ode_errors.raise_if_failed(self, (y_out, ys), code, t_stop, sol.stats)
        else:
            ok = diffrax.is_successful(sol.result)
            y_out = jnp.where(ok, y_out, jnp.nan)
            ys = None if ys is None else jnp.where(ok, ys, jnp.nan)
        return y_out, ys, sol.result

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
        y_out, _, result = self._checked_solve(y, args, None, throw=False)
        return y_out, result

    def __call__(self, y: State, args: Args = None) -> State:
        if isinstance(self.adjoint, ReversibleAdjoint):  # exact, O(1)-memory backprop
            self.check_state(y)
            return self.adjoint.solve_final(
                self.field, self.solver, self.horizon, self.dt0, y, args,
                throw=self.throw,
            )
        return self._checked_solve(y, args, None, throw=self.throw)[0]

    def trajectory(
        self, y: State, ts: Float[ArrayLike, " times"], args: Args = None
    ) -> Float[Array, "times *state"]:
        """The solution at the times `ts` (increasing, within `[0, horizon]`), stacked
        along a new first axis."""
        self.check_state(y)
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
        if not (jnp.issubdtype(ts.dtype, jnp.floating) or jnp.issubdtype(ts.dtype, jnp.integer)):
            raise TypeError(f"`ts` must hold real times, got dtype {ts.dtype}.")
        if not isinstance(ts, jax.core.Tracer):
            bad = (
                ~jnp.all(jnp.isfinite(ts))
                or jnp.any(jnp.diff(ts) < 0)
                or ts[0] < 0
                or ts[-1] > self.horizon
            )
            if bad:
                raise ValueError(
                    f"`ts` must be finite, non-decreasing and within [0, {self.horizon}], "
                    f"got {ts}."
                )
        ts = ts.astype(self._time_dtype(y))
        return self._checked_solve(y, args, ts, throw=self.throw)[1]
