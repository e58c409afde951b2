import math
import numbers
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Int

from .._adjoint.reversible_scan import (
    check_memory,
    Memory,
    reversible_scan,
    run_inverse,
)
from .._custom_types import Args, State
from .._fields.protocol import (
    ARGS_UNKNOWN,
    check_field,
    check_field_horizon,
    check_field_state,
)
from .._step_rule import residual_update, step_time
from .._validation import check_positive_float, check_positive_int
from .base import AbstractDepthModel


class MomentumResNet(AbstractDepthModel):
    """A momentum residual network: with `h = horizon / num_steps`, `t_k = k h`,

    `v_{k+1} = gamma v_k + (1 - gamma) F(t_k, x_k)`,  `x_{k+1} = x_k + h v_{k+1}`.

    The step is invertible in closed form, `x_k = x_{k+1} - h v_{k+1}`,
    `v_k = (v_{k+1} - (1 - gamma) F(t_k, x_k)) / gamma`, so with `memory="reversible"`
    (default) the backward pass rebuilds every activation from `(x_N, v_N)` instead of
    storing it: gradient memory is O(1) in depth. `model(x)` starts from `v_0 = 0`
    and returns `x_N`; use `forward_with_velocity` for another `v_0`.

    !!! warning "Drift"

        The forward map shrinks the velocity by `gamma` per step, so inverting it in
        floating point amplifies round-off by about `gamma**-num_steps` (measured: the
        rebuilt input is off by ~`eps * gamma**-num_steps`). The rebuilt activations,
        and hence reversible gradients, are accurate only while that is small:
        `gamma = 0.9` is fine for tens of steps, not for a thousand. For deep stacks
        scale the momentum with the step, `gamma = 1 - h / eps_m` for a fixed time
        constant `eps_m` (Sander et al.'s continuous limit `eps_m x'' + x' = F`):
        then `gamma**-N <= exp(T / eps_m)` for every `N`. Sander et al. also store the
        bits lost in the multiplication (Maclaurin et al. 2015) for exactness;
        contdepth does not. Instead the backward pass checks the rebuilt input against
        the true one and raises if they differ by more than `sqrt(eps)`, so a drifted
        gradient is never returned silently. Alternatives: float64,
        [`contdepth.ReversibleResNet`][] (volume preserving, no such amplification),
        or `memory="store"`.

    !!! note "Forward mode"

        `memory="reversible"` is a `jax.custom_vjp`: reverse mode (`jax.grad`,
        `jax.jacrev`) only. For `jax.jvp`/`jax.jacfwd` use
        `model.with_memory("store")`, the same function with plain autodiff (forward
        mode stores no activations, so it is O(1)-memory anyway).

    References: Sander, Ablin, Blondel & Peyré 2021, "Momentum Residual Neural
    Networks"; Maclaurin, Duvenaud & Adams 2015, "Gradient-based Hyperparameter
    Optimization through Reversible Learning".
    """

    field: Callable
    num_steps: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    memory: Memory = eqx.field(static=True)

    def __init__(
        self,
        field: Callable,
        num_steps: int,
        horizon: float,
        *,
        gamma: float,
        memory: Memory = "reversible",
    ):
        """**Arguments:**

        - `field`: the vector field `F(t, x, args)` (the residual function; any
            callable).
        - `num_steps`: the depth `N >= 1`.
        - `horizon`: the final time `T > 0`; the step is `h = T / N`.
        - `gamma`: the momentum in `[0, 1)`. `gamma = 0` is an
            [`contdepth.EulerResNet`][]; `memory="reversible"` needs `gamma > 0`.
        - `memory`: `"reversible"` (rebuild activations on the backward pass; O(1)
            memory in `N`; reverse mode only) or `"store"` (ordinary backprop through
            one `lax.scan`; O(N) memory; also supports `jax.jvp`/`jax.jacfwd`).
        """
        self.field = check_field("field", field)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.horizon = check_positive_float("horizon", horizon)
        check_field_horizon("field", field, "MomentumResNet", self.horizon)
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
            raise TypeError(f"`gamma` must be a real number in [0, 1), got {gamma!r}.")
        gamma = float(gamma)
        if not (math.isfinite(gamma) and 0.0 <= gamma < 1.0):
            raise ValueError(f"`gamma` must be a real number in [0, 1), got {gamma}.")
        self.memory = check_memory(memory)
        if self.memory == "reversible" and gamma == 0.0:
            raise ValueError(
                "`memory='reversible'` needs `gamma > 0` (the inverse step divides by "
                "gamma), got gamma=0.0. Use `memory='store'`, or `cd.EulerResNet`."
            )
        self.gamma = gamma

    @property
    def step_size(self) -> float:
        """`h = horizon / num_steps`."""
        return self.horizon / self.num_steps

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_field_state(self.field, y, args, name)

    def _check_pair(self, x: State, v: State, args: Args = ARGS_UNKNOWN) -> None:
        self.check_state(x, "x", args)
        self.check_state(v, "v")
        if x.shape != v.shape or x.dtype != v.dtype:
            raise ValueError(
                "`x` and `v` (position and velocity) must have the same shape and "
                "dtype, "
                f"got {tuple(x.shape)} {x.dtype} and {tuple(v.shape)} {v.dtype}."
            )

    def forward_with_velocity(
        self, x: State, v: State, args: Args = None
    ) -> tuple[State, State]:
        """**Arguments:**

        - `x`: the input position `x_0`.
        - `v`: the initial velocity `v_0`, same shape as `x`.
        - `args`: forwarded to the field.

        **Returns:**

        `(x_N, v_N)`.
        """
        self._check_pair(x, v, args)
        return reversible_scan(
            _step,
            _inverse_step,
            (self, args),
            (x, v),
            self.num_steps,
            memory=self.memory,
        )

    def __call__(self, y: State, args: Args = None) -> State:
        """**Arguments:**

        - `y`: the input state `x_0` (the velocity starts at `v_0 = 0`).
        - `args`: forwarded to the field.

        **Returns:**

        `x_N`, same shape and dtype as `y`.
        """
        self.check_state(y, "y", args)
        x_final, _ = self.forward_with_velocity(y, jnp.zeros_like(y), args)
        return x_final

    def inverse(self, x: State, v: State, args: Args = None) -> tuple[State, State]:
        """Undo `forward_with_velocity`: rebuild `(x_0, v_0)` from `(x_N, v_N)`.

        Exact in exact arithmetic; in floating point the error in `v_0` grows like
        `gamma**-num_steps` times the unit round-off (see the class docstring).

        **Arguments:**

        - `x`, `v`: the final position and velocity `(x_N, v_N)`, same shape.
        - `args`: forwarded to the field (as in the forward pass).

        **Returns:**

        `(x_0, v_0)`.
        """
        self._check_pair(x, v)
        return run_inverse(_inverse_step, (self, args), (x, v), self.num_steps)

    def with_memory(self, memory: Memory) -> "MomentumResNet":
        """The same model (same weights) with another `memory` mode, e.g.
        `model.with_memory("store")` for forward-mode autodiff (`jax.jacfwd`)."""
        return MomentumResNet(
            self.field, self.num_steps, self.horizon, gamma=self.gamma, memory=memory
        )


def _coefficients(model: MomentumResNet, dtype):
    h = jnp.asarray(model.step_size, dtype=dtype)
    return h, jnp.asarray(model.gamma, dtype=dtype)


def _step(operands, k: Int[Array, ""], z):
    model, args = operands
    x, v = z
    h, gamma = _coefficients(model, x.dtype)
    v = gamma * v + (1 - gamma) * model.field(step_time(k, h), x, args)
    return residual_update(x, h, v), v


def _inverse_step(operands, k: Int[Array, ""], z):
    model, args = operands
    x, v = z
    h, gamma = _coefficients(model, x.dtype)
    x = residual_update(x, -h, v)
    v = (v - (1 - gamma) * model.field(step_time(k, h), x, args)) / gamma
    return x, v
