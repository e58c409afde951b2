import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import Args, State
from .._fields.base import AbstractVectorField
from .._validation import check_positive_float, check_positive_int
from ._checks import check_field
from .base import AbstractDepthModel


class NeuralODE(AbstractDepthModel):
    """The continuous-depth model: `y(T)` where `dy/dt = F(t, y, args)`, `y(0) = y`,
    integrated by a diffrax solver with adaptive step-size control.

    The same field in an [`contdepth.EulerResNet`][] is this model's forward-Euler
    discretisation. A failed solve (e.g. `max_steps` reached) raises an error naming
    the limit to raise; it never returns silently wrong numbers.

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
    ):
        """**Arguments:**

        - `field`: the vector field `F(t, y, args)`.
        - `horizon`: the final time `T > 0`.
        - `solver`: any diffrax ODE solver. Adaptive solvers (default `Tsit5`) use a
            PID controller with `rtol`/`atol`; fixed-step solvers need `dt0`.
        - `rtol`, `atol`: relative and absolute tolerances of the step-size controller.
        - `adjoint`: how gradients are computed (diffrax adjoint; default
            `RecursiveCheckpointAdjoint`, exact backpropagation through the solver).
        - `max_steps`: the most solver steps allowed; reaching it is an error.
        - `dt0`: a constant step size. `None` (default) means adaptive steps.
        """
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

    def check_state(self, y: State, name: str = "y") -> None:
        self.field.check_state(y, name)

    def solve(
        self,
        y: State,
        args: Args = None,
        *,
        saveat: diffrax.SaveAt | None = None,
        throw: bool = True,
    ) -> diffrax.Solution:
        """Solve on `[0, horizon]` and return the full diffrax `Solution` (with
        `.stats["num_steps"]`, `.result`, ...).

        **Arguments:**

        - `y`: the initial state.
        - `args`: forwarded to the field.
        - `saveat`: a `diffrax.SaveAt`; default saves only the final state.
        - `throw`: raise on solver failure (default). With `throw=False` inspect
            `solution.result` yourself.
        """
        self.check_state(y)
        if self.dt0 is None:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        else:
            controller = diffrax.ConstantStepSize()
        return diffrax.diffeqsolve(
            diffrax.ODETerm(self.field),
            self.solver,
            t0=0.0,
            t1=self.horizon,
            dt0=self.dt0,
            y0=y,
            args=args,
            saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
            stepsize_controller=controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=throw,
        )

    def __call__(self, y: State, args: Args = None) -> State:
        return self.solve(y, args).ys[-1]

    def trajectory(
        self, y: State, ts: Float[ArrayLike, " times"], args: Args = None
    ) -> Float[Array, "times *state"]:
        """The solution at the times `ts` (increasing, within `[0, horizon]`), stacked
        along a new first axis."""
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] == 0:
            raise ValueError(
                f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}."
            )
        return self.solve(y, args, saveat=diffrax.SaveAt(ts=ts)).ys
