from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from ._custom_types import Args
from ._models.base import AbstractDepthModel


class Classifier(eqx.Module):
    """Features to logits: `readout(body(encoder(x)))` for one sample.

    `body` is any depth model ([`contdepth.EulerResNet`][], [`contdepth.NeuralODE`][],
    [`contdepth.PlainNet`][], ...), so models can be swapped and compared at equal
    encoder and readout.
    """

    encoder: Callable
    body: AbstractDepthModel
    readout: Callable

    def __init__(self, encoder: Callable, body: AbstractDepthModel, readout: Callable):
        """**Arguments:**

        - `encoder`: a module mapping one feature vector to one state of `body`
            (e.g. `eqx.nn.Linear(num_features, dim, key=...)`).
        - `body`: the depth model.
        - `readout`: a module mapping one state to logits of shape `(num_classes,)`.
        """
        if not callable(encoder):
            raise TypeError(f"`encoder` must be callable, got {type(encoder).__name__}.")
        if not isinstance(body, AbstractDepthModel):
            raise TypeError(
                "`body` must be a contdepth depth model (e.g. `cd.EulerResNet`), got "
                f"{type(body).__name__}."
            )
        if not callable(readout):
            raise TypeError(f"`readout` must be callable, got {type(readout).__name__}.")
        self.encoder = encoder
        self.body = body
        self.readout = readout

    def features(self, x: Float[Array, " features"]) -> Float[Array, "*state"]:
        """The encoded state `encoder(x)`, the input of `body`."""
        return self.encoder(x)

    def __call__(
        self, x: Float[Array, " features"], args: Args = None
    ) -> Float[Array, " classes"]:
        """**Arguments:**

        - `x`: one feature vector (no batch axis; `jax.vmap` over a batch).
        - `args`: forwarded to the body's vector field.

        **Returns:**

        Logits of shape `(num_classes,)`.
        """
        return self.readout(self.body(self.encoder(x), args))
