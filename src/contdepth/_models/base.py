import abc

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._custom_types import Args, State
from .._fields.protocol import ARGS_UNKNOWN
from .._validation import check_float_array


class AbstractDepthModel(eqx.Module):
    """A depth model maps one state to one state: `model(y, args=None) -> y_out`.

    Models act on a single sample (no batch axis); batch with `jax.vmap`. Every model
    is a PyTree of arrays, so `jax.jit`, `jax.grad`, `jax.jacfwd` and sharding apply
    directly.
    """

    @abc.abstractmethod
    def __call__(self, y: State, args: Args = None) -> State:
        """**Arguments:**

        - `y`: one input state (floating point; no batch axis).
        - `args`: any PyTree forwarded to the vector field.

        **Returns:**

        The output state, same shape and dtype as `y`.
        """

    @abc.abstractmethod
    def check_state(self, y: State, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        """Raise a clear `TypeError`/`ValueError` if `y` is not a valid input state.

        Runs at trace time on shapes only. When `args` are given, a model built on a
        plain callable field also checks that the field returns `dy/dt` of the state's
        shape and dtype (one `jax.eval_shape`); the model's own calls always pass them.
        """


def check_model_state(model, y: State, name: str = "y", args: Args = ARGS_UNKNOWN):
    """A model's own input check, where it has one: a contdepth model's `check_state`
    (given `args`, which also checks a callable field's output), or any callable's
    `check_state(y, name)`. Models without one are not checked here."""
    if isinstance(model, AbstractDepthModel):
        model.check_state(y, name, args)
    elif callable(getattr(model, "check_state", None)):
        model.check_state(y, name)


class AbstractDiscreteDepthModel(AbstractDepthModel):
    """A depth model made of `num_layers` explicit steps `y_{k+1} = step(k, y_k)`.

    Subclasses provide `num_layers` and `step`; the forward pass is one `lax.scan`,
    so compile time does not grow with depth.
    """

    @property
    @abc.abstractmethod
    def num_layers(self) -> int:
        """Number of steps (layers)."""

    @abc.abstractmethod
    def step(self, k: Int[Array, ""], y: State, args: Args = None) -> State:
        """Apply layer `k` (a traced integer in `[0, num_layers)`) to the state `y`."""

    def __call__(self, y: State, args: Args = None) -> State:
        self.check_state(y, args=args)

        def body(y, k):
            return self.step(k, y, args), None

        y_out, _ = lax.scan(body, y, jnp.arange(self.num_layers))
        return y_out

    def trajectory(
        self, y: State, args: Args = None
    ) -> Float[Array, " layers+1 *state"]:
        """All `num_layers + 1` states `y_0, ..., y_N`, stacked along a new first
        axis."""
        self.check_state(y, args=args)

        def body(y, k):
            y_next = self.step(k, y, args)
            return y_next, y_next

        _, ys = lax.scan(body, y, jnp.arange(self.num_layers))
        return jnp.concatenate([y[None], ys])

    def perturbed(
        self, y: State, deltas: Float[Array, " layers *state"], args: Args = None
    ):
        """Forward pass with `deltas[k]` added to the state entering layer `k`.

        With `deltas = 0` the output equals `self(y)`, and the gradient of a loss with
        respect to `deltas[k]` is exactly `dL/dy_k`: the per-layer gradient profile.
        """
        self.check_state(y, args=args)
        check_float_array("deltas", deltas)
        if deltas.shape != (self.num_layers, *y.shape):
            raise ValueError(
                f"`deltas` must have shape {(self.num_layers, *y.shape)} "
                f"(num_layers, *state), got {tuple(deltas.shape)}."
            )
        # Promote rather than cast: float64 deltas are never rounded to a float32 state.
        dtype = jnp.result_type(y, deltas)
        y, deltas = y.astype(dtype), deltas.astype(dtype)

        def body(y, xs):
            k, delta = xs
            return self.step(k, y + delta, args), None

        y_out, _ = lax.scan(body, y, (jnp.arange(self.num_layers), deltas))
        return y_out
