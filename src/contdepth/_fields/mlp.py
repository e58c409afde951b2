from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, Vector
from .._validation import (
    check_bool,
    check_callable,
    check_float_array,
    check_key,
    check_nonnegative_float,
    check_positive_int,
    check_state_shape,
)
from ._activation import activation_lipschitz
from .base import AbstractVectorField


class MLPField(AbstractVectorField):
    """A multilayer-perceptron vector field on vectors of shape `(dim,)`:
    `F(t, y) = W_D act(... act(W_1 [y, t] + b_1) ...) + b_D`.

    With `time_dependent=True` the time `t` is appended to the input, so a single
    network represents depth-varying weights (Chen et al. 2018, "Neural Ordinary
    Differential Equations").
    """

    mlp: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True)
    activation_lipschitz: float | None = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        *,
        activation: Callable = jax.nn.tanh,
        time_dependent: bool = False,
        activation_lipschitz: float | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dim`: size of the state.
        - `width`: size of each hidden layer.
        - `depth`: number of hidden layers (`depth + 1` linear maps).
        - `activation`: the hidden nonlinearity.
        - `time_dependent`: whether `t` is fed to the network as an extra input.
        - `activation_lipschitz`: sup of `|activation'|`, needed by `lipschitz_bound`
            for activations contdepth does not know.
        - `key`: a `jax.random.PRNGKey` for the initial weights.
        """
        self.dim = check_positive_int("dim", dim)
        width = check_positive_int("width", width)
        depth = check_positive_int("depth", depth)
        time_dependent = check_bool("time_dependent", time_dependent)
        check_callable("activation", activation)
        if activation_lipschitz is not None:
            activation_lipschitz = check_nonnegative_float(
                "activation_lipschitz", activation_lipschitz
            )
        check_key("key", key)
        self.time_dependent = time_dependent
        self.activation_lipschitz = activation_lipschitz
        self.mlp = eqx.nn.MLP(
            in_size=dim + int(time_dependent),
            out_size=dim,
            width_size=width,
            depth=depth,
            activation=activation,
            key=key,
        )

    def __call__(self, t: RealScalarLike, y: Vector, args: Args = None) -> Vector:
        if self.time_dependent:
            y_in = jnp.concatenate([y, jnp.reshape(t, (1,)).astype(y.dtype)])
        else:
            y_in = y
        return self.mlp(y_in).astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"MLPField(dim={self.dim})")

    def lipschitz_bound(self) -> Float[Array, ""]:
        lip_act = activation_lipschitz(self.mlp.activation, self.activation_lipschitz)
        bound = jnp.asarray(1.0)
        for i, layer in enumerate(self.mlp.layers):
            weight = layer.weight
            if i == 0 and self.time_dependent:
                weight = weight[:, : self.dim]  # Lipschitz in y only, uniformly in t.
            bound = bound * jnp.linalg.norm(weight, ord=2)
        return bound * lip_act ** (len(self.mlp.layers) - 1)
