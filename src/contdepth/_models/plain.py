from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Args, Vector
from .._fields.protocol import ARGS_UNKNOWN
from .._validation import (
    check_callable,
    check_float_array,
    check_key,
    check_positive_int,
    check_state_shape,
)
from .base import AbstractDiscreteDepthModel


def _uniform_init(key, shape, fan_in, dtype=None):
    # The default of torch.nn.Linear / eqx.nn.Linear:
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    lim = 1.0 / jnp.sqrt(fan_in)
    return jr.uniform(key, shape, dtype=dtype, minval=-lim, maxval=lim)


class PlainNet(AbstractDiscreteDepthModel):
    """A plain feed-forward stack with no skip connection:
    `y_{k+1} = act(W_k y_k + b_k)`.

    Its Jacobian is a product of `diag(act'(z_k)) W_k` factors: with tanh
    (`|tanh'| <= 1`) and standard initialisation the product shrinks geometrically
    (vanishing gradients), and deep plain stacks train worse than shallow ones (the
    degradation problem of He et al. 2016).

    References: Glorot & Bengio 2010, "Understanding the difficulty of training deep
    feedforward neural networks"; He et al. 2016, "Deep Residual Learning for Image
    Recognition".
    """

    weights: Float[Array, "layers dim dim"]
    biases: Float[Array, "layers dim"]
    activation: Callable
    dim: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        num_layers: int,
        *,
        activation: Callable = jax.nn.tanh,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `dim`: size of the state (input and output).
        - `num_layers`: depth `N >= 1`.
        - `activation`: the nonlinearity applied after every layer.
        - `key`: a `jax.random.PRNGKey` for the weights (uniform `±1/sqrt(dim)`, the
            PyTorch/Equinox default).
        """
        self.dim = check_positive_int("dim", dim)
        num_layers = check_positive_int("num_layers", num_layers)
        check_callable("activation", activation)
        wkey, bkey = jr.split(check_key("key", key))
        self.weights = _uniform_init(wkey, (num_layers, dim, dim), dim)
        self.biases = _uniform_init(bkey, (num_layers, dim), dim)
        self.activation = activation

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    def step(self, k: Int[Array, ""], y: Vector, args: Args = None) -> Vector:
        return self.activation(self.weights[k] @ y + self.biases[k]).astype(y.dtype)

    def check_state(self, y, name: str = "y", args: Args = ARGS_UNKNOWN) -> None:
        check_float_array(name, y)
        check_state_shape(name, y, (self.dim,), f"PlainNet(dim={self.dim})")
