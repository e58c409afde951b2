from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

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
from .._validation import check_float_array, check_positive_float, check_positive_int
from .base import AbstractDepthModel


class ReversibleResNet(AbstractDepthModel):
    """A reversible residual network by additive coupling (a leapfrog / symplectic-Euler
    scheme). The state is split in half along its last axis, `y = [y1, y2]`, and with
    `h = horizon / num_steps`, `t_k = k h`:

    `y1_{k+1} = y1_k + h F_a(t_k, y2_k)`,  `y2_{k+1} = y2_k + h F_b(t_k, y1_{k+1})`.

    Each step is undone exactly by subtracting the same terms in reverse order, and the
    map has unit Jacobian determinant (it preserves volume), so rebuilding activations
    backwards does not amplify round-off the way a damped scheme does. With
    `memory="reversible"` (default) the backward pass rebuilds every activation from
    `y_N`: gradient memory is O(1) in depth. As `num_steps -> inf` it converges to the
    flow of `dy1/dt = F_a(t, y2)`, `dy2/dt = F_b(t, y1)`.

    `memory="reversible"` is a `jax.custom_vjp`: reverse mode (`jax.grad`,
    `jax.jacrev`) only. For `jax.jvp`/`jax.jacfwd` use `model.with_memory("store")`.

    References: Gomez, Ren, Urtasun & Grosse 2017, "The Reversible Residual Network:
    Backpropagation Without Storing Activations"; Chang, Meng, Haber, Ruthotto, Begert &
    Holtham 2018, "Reversible Architectures for Arbitrarily Deep Residual Neural
    Networks"; Haber & Ruthotto 2017, "Stable Architectures for Deep Neural Networks".
    """

    field_a: Callable
    field_b: Callable
    num_steps: int = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    memory: Memory = eqx.field(static=True)

    def __init__(
        self,
        field_a: Callable,
        field_b: Callable,
        num_steps: int,
        horizon: float,
        *,
        memory: Memory = "reversible",
    ):
        """**Arguments:**

        - `field_a`: `F_a(t, y2, args)` (any callable), updating the first half from the
            second; it acts on half-states (e.g. `cd.MLPField(dim // 2, ...)` for
            `(dim,)` states).
        - `field_b`: `F_b(t, y1, args)`, updating the second half from the first.
        - `num_steps`: the depth `N >= 1`.
        - `horizon`: the final time `T > 0`; the step is `h = T / N`.
        - `memory`: `"reversible"` (rebuild activations on the backward pass; O(1)
            memory in `N`; reverse mode only) or `"store"` (ordinary backprop through
            one `lax.scan`; O(N) memory; also supports `jax.jvp`/`jax.jacfwd`).
        """
        self.field_a = check_field("field_a", field_a)
        self.field_b = check_field("field_b", field_b)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.horizon = check_positive_float("horizon", horizon)
        check_field_horizon("field_a", field_a, "ReversibleResNet", self.horizon)
        check_field_horizon("field_b", field_b, "ReversibleResNet", self.horizon)
        self.memory = check_memory(memory)

    @property
    def step_size(self) -> float:
        """`h = horizon / num_steps`."""
        return self.horizon / self.num_steps

    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_float_array(name, y)
        if y.ndim == 0 or y.shape[-1] % 2 != 0:
            raise ValueError(
                f"`{name}` has shape {tuple(y.shape)}, but ReversibleResNet splits the "
                "last axis in two equal halves, so it must have even size (e.g. pad "
                "the "
                "state or change the encoder's output size)."
            )
        # Shapes only, so this also accepts `jax.ShapeDtypeStruct`s (eval_shape).
        half = jax.ShapeDtypeStruct((*y.shape[:-1], y.shape[-1] // 2), y.dtype)
        check_field_state(self.field_a, half, args, f"{name}[..., half:]")
        check_field_state(self.field_b, half, args, f"{name}[..., :half]")

    def __call__(self, y: State, args: Args = None) -> State:
        """**Arguments:**

        - `y`: one input state; its last axis (of even size) holds `[y1, y2]`.
        - `args`: forwarded to both fields.

        **Returns:**

        `y_N`, same shape and dtype as `y`.
        """
        self.check_state(y, args=args)
        z = reversible_scan(
            _step,
            _inverse_step,
            (self, args),
            _split(y),
            self.num_steps,
            memory=self.memory,
        )
        return jnp.concatenate(z, axis=-1)

    def inverse(self, y: State, args: Args = None) -> State:
        """Undo `__call__`: rebuild `y_0` from `y_N`, step by step.

        **Arguments:**

        - `y`: the output `y_N` of `__call__`.
        - `args`: forwarded to both fields (as in the forward pass).

        **Returns:**

        `y_0`, same shape as `y` (equal to the input up to round-off).
        """
        self.check_state(y, args=args)
        z = run_inverse(_inverse_step, (self, args), _split(y), self.num_steps)
        return jnp.concatenate(z, axis=-1)

    def with_memory(self, memory: Memory) -> "ReversibleResNet":
        """The same model (same weights) with another `memory` mode, e.g.
        `model.with_memory("store")` for forward-mode autodiff (`jax.jacfwd`)."""
        return ReversibleResNet(
            self.field_a, self.field_b, self.num_steps, self.horizon, memory=memory
        )


def _split(y: Float[Array, "*batch dim"]) -> tuple[Array, Array]:
    half = y.shape[-1] // 2
    return y[..., :half], y[..., half:]


def _step(operands, k: Int[Array, ""], z):
    model, args = operands
    y1, y2 = z
    h = jnp.asarray(model.step_size, dtype=y1.dtype)
    t = step_time(k, h)
    y1 = residual_update(y1, h, model.field_a(t, y2, args))
    y2 = residual_update(y2, h, model.field_b(t, y1, args))
    return y1, y2


def _inverse_step(operands, k: Int[Array, ""], z):
    model, args = operands
    y1, y2 = z
    h = jnp.asarray(model.step_size, dtype=y1.dtype)
    t = step_time(k, h)
    y2 = residual_update(y2, -h, model.field_b(t, y1, args))
    y1 = residual_update(y1, -h, model.field_a(t, y2, args))
    return y1, y2
