from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike
from .._validation import (
    check_callable,
    check_float_array,
    check_key,
    check_nonnegative_float,
    check_positive_int,
)
from ._activation import activation_lipschitz
from .base import AbstractVectorField


def _conv_lipschitz(weight: Float[Array, "out in kh kw"]) -> Float[Array, ""]:
    # A zero-padded convolution is a sum over kernel offsets of (shift, channel mix);
    # shifts have norm <= 1, so ||conv|| <= sum_offsets ||K[:, :, i, j]||_2.
    per_offset = jnp.moveaxis(weight, (2, 3), (0, 1))
    return jnp.sum(jnp.linalg.norm(per_offset, ord=2, axis=(-2, -1)))


class ConvField(AbstractVectorField):
    """A convolutional vector field on images `(C, H, W)`:
    `F(t, y) = conv_2(act(conv_1(y)))`, both 'SAME'-padded.

    Each output pixel depends only on a `kernel_size`-neighbourhood, so the flow is
    *local*: the per-step Jacobian `I + h J_F` is banded (Ruthotto & Haber 2019,
    "Deep Neural Networks Motivated by Partial Differential Equations").
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    activation: Callable
    channels: int = eqx.field(static=True)
    activation_lipschitz: float | None = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        *,
        width: int,
        kernel_size: int = 3,
        activation: Callable = jax.nn.tanh,
        activation_lipschitz: float | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: number of channels `C` of the state.
        - `width`: number of hidden channels.
        - `kernel_size`: odd spatial size of both kernels.
        - `activation`: the hidden nonlinearity.
        - `activation_lipschitz`: sup of `|activation'|` for unknown activations.
        - `key`: a `jax.random.PRNGKey` for the initial weights.
        """
        self.channels = check_positive_int("channels", channels)
        width = check_positive_int("width", width)
        kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"`kernel_size` must be odd so 'SAME' padding keeps the state's shape, "
                f"got {kernel_size}."
            )
        check_callable("activation", activation)
        if activation_lipschitz is not None:
            activation_lipschitz = check_nonnegative_float(
                "activation_lipschitz", activation_lipschitz
            )
        k1, k2 = jr.split(check_key("key", key))
        self.conv1 = eqx.nn.Conv2d(channels, width, kernel_size, padding="SAME", key=k1)
        self.conv2 = eqx.nn.Conv2d(width, channels, kernel_size, padding="SAME", key=k2)
        self.activation = activation
        self.activation_lipschitz = activation_lipschitz

    def __call__(
        self, t: RealScalarLike, y: Float[Array, "C H W"], args: Args = None
    ) -> Float[Array, "C H W"]:
        return self.conv2(self.activation(self.conv1(y))).astype(y.dtype)

    def check_state(self, y, name: str = "y") -> None:
        check_float_array(name, y)
        if y.ndim != 3 or y.shape[0] != self.channels or 0 in y.shape:
            raise ValueError(
                f"`{name}` has shape {tuple(y.shape)}, but ConvField(channels="
                f"{self.channels}) expects a single image of shape ({self.channels}, "
                "H, W) "
                "with H, W >= 1 (no batch axis: use `jax.vmap` over a batch)."
            )

    def lipschitz_bound(self) -> Float[Array, ""]:
        lip_act = activation_lipschitz(self.activation, self.activation_lipschitz)
        return (
            _conv_lipschitz(self.conv1.weight)
            * lip_act
            * _conv_lipschitz(self.conv2.weight)
        )
