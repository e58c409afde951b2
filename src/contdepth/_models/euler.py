from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Int

from .._custom_types import Args, State
from .._fields.protocol import (
    ARGS_UNKNOWN,
    check_field,
    check_field_horizon,
    check_field_state,
    warn_if_steps_straddle_jumps,
)
from .._step_rule import rk_step, step_time
from .._validation import check_positive_float, check_positive_int
from .base import AbstractDiscreteDepthModel


class EulerResNet(AbstractDiscreteDepthModel):
    """A residual network as forward Euler on a vector field:
    `y_{k+1} = y_k + h F(t_k, y_k)`, `h = horizon / num_steps`, `t_k = k h`.

    Depth is time: with the horizon `T` fixed and `num_steps -> inf` the network
    converges (error `O(1/N)`) to the flow of `dy/dt = F(t, y)` on `[0, T]`, i.e. to
    [`contdepth.NeuralODE`][] on the same field. With `horizon = num_steps` (`h = 1`) it
    is the classic unscaled ResNet `y_{k+1} = y_k + F(y_k)` of He et al. 2016.

    References: He et al. 2016, "Deep Residual Learning for Image Recognition"; Haber &
    Ruthotto 2017, "Stable Architectures for Deep Neural Networks"; E 2017, "A Proposal
    on Machine Learning via Dynamical Systems".
    """

    field: Callable
    num_steps: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)

    def __init__(self, field: Callable, num_steps: int, horizon: float):
        """**Arguments:**

        - `field`: the vector field: any callable `F(t, y, args) -> dy/dt` (a
            function, an `eqx.Module`, a contdepth field such as `cd.MLPField`).
        - `num_steps`: the depth `N >= 1` (number of residual blocks / Euler steps).
        - `horizon`: the final time `T > 0`; the step is `h = T / N`. A field that
            declares a `horizon` (e.g. `cd.PiecewiseField`) must have this one, else
            `ValueError`.

        A field with `jump_times` (a `cd.PiecewiseField` of `M` pieces) whose jumps
        are not on the step grid (`num_steps` not a multiple of `M`) triggers a
        `cd.StepStraddlesJumpWarning`; filter that category to silence it.
        """
        self.field = check_field("field", field)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.horizon = check_positive_float("horizon", horizon)
        check_field_horizon("field", field, "EulerResNet", self.horizon)
        warn_if_steps_straddle_jumps(field, "EulerResNet", self.num_steps, self.horizon)

    @property
    def step_size(self) -> float:
        """`h = horizon / num_steps`."""
        return self.horizon / self.num_steps

    @property
    def num_layers(self) -> int:
        return self.num_steps

    def times(self, dtype=None) -> Array:
        """The step times `t_k = k h`, `k = 0, ..., N - 1`."""
        return jnp.arange(self.num_steps, dtype=dtype) * jnp.asarray(
            self.step_size, dtype=dtype
        )

    def step(self, k: Int[Array, ""], y: State, args: Args = None) -> State:
        h = jnp.asarray(self.step_size, dtype=y.dtype)
        return rk_step("euler", self.field, step_time(k, h), y, h, args)

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_field_state(self.field, y, args, name)
