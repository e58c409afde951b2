import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Args, Vector
from .._fields.protocol import ARGS_UNKNOWN
from .._validation import (
    check_float_array,
    check_key,
    check_positive_int,
    check_real,
    check_state_shape,
)
from .base import AbstractDiscreteDepthModel
from .plain import _uniform_init


class HighwayNet(AbstractDiscreteDepthModel):
    """A highway network: `y_{k+1} = (1 - T_k(y)) * y + T_k(y) * H_k(y)` with a learned
    gate `T_k(y) = sigmoid(W^T_k y + b^T_k)` and transform
    `H_k(y) = tanh(W^H_k y + b^H_k)`.

    The gate bias starts at `gate_bias` (default -2, as in the paper) so the identity
    path is open at initialisation; when `T -> 1` the skip closes and the stack is
    plain again (vanishing gradients return).

    Reference: Srivastava, Greff & Schmidhuber 2015, "Training Very Deep Networks".
    """

    transform_weights: Float[Array, "layers dim dim"]
    transform_biases: Float[Array, "layers dim"]
    gate_weights: Float[Array, "layers dim dim"]
    gate_biases: Float[Array, "layers dim"]
    dim: int = eqx.field(static=True)

    def __init__(
        self, dim: int, num_layers: int, *, gate_bias: float = -2.0, key: PRNGKeyArray
    ):
        """**Arguments:**

        - `dim`: size of the state.
        - `num_layers`: depth `N >= 1`.
        - `gate_bias`: initial bias of every gate; negative keeps the highway open.
        - `key`: a `jax.random.PRNGKey` for the weights.
        """
        self.dim = check_positive_int("dim", dim)
        num_layers = check_positive_int("num_layers", num_layers)
        gate_bias = check_real("gate_bias", gate_bias)
        k1, k2, k3 = jr.split(check_key("key", key), 3)
        self.transform_weights = _uniform_init(k1, (num_layers, dim, dim), dim)
        self.transform_biases = _uniform_init(k2, (num_layers, dim), dim)
        self.gate_weights = _uniform_init(k3, (num_layers, dim, dim), dim)
        self.gate_biases = jnp.full(
            (num_layers, dim), float(gate_bias), dtype=self.gate_weights.dtype
        )

    @property
    def num_layers(self) -> int:
        return self.gate_weights.shape[0]

    def gate(self, k: Int[Array, ""], y: Vector) -> Vector:
        """The gate `T_k(y)` in `(0, 1)^dim`."""
        return jax.nn.sigmoid(self.gate_weights[k] @ y + self.gate_biases[k])

    def step(self, k: Int[Array, ""], y: Vector, args: Args = None) -> Vector:
        gate = self.gate(k, y)
        transform = jnp.tanh(self.transform_weights[k] @ y + self.transform_biases[k])
        return ((1 - gate) * y + gate * transform).astype(y.dtype)

    def check_state(self, y, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"HighwayNet(dim={self.dim})")
