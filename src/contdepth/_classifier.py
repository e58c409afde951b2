from collections.abc import Callable

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._custom_types import Args
from ._models.base import check_model_state
from ._validation import check_float_array


def _check_readout(readout, state) -> None:
    # Readout mismatches otherwise surface as an opaque `dot_general` shape error.
    if isinstance(readout, eqx.nn.Linear) and readout.in_features != "scalar":
        if tuple(state.shape) != (readout.in_features,):
            raise ValueError(
                "`readout` is an eqx.nn.Linear with "
                f"in_features={readout.in_features}, "
                f"but the body's state has shape {tuple(state.shape)}: make them match."
            )


def _check_logits(logits) -> None:
    if not hasattr(logits, "shape") or len(logits.shape) != 1 or logits.shape[0] == 0:
        raise ValueError(
            "`readout` must map one state to logits of shape (num_classes,), got "
            f"{getattr(logits, 'shape', type(logits).__name__)}."
        )


class Classifier(eqx.Module):
    """Features to logits: `readout(body(encoder(x)))` for one sample.

    `body` is any depth model ([`contdepth.EulerResNet`][], [`contdepth.NeuralODE`][],
    [`contdepth.PlainNet`][], ..., or any single-sample callable `body(y, args)`), so
    models can be swapped and compared at equal encoder and readout.
    """

    encoder: Callable
    body: Callable
    readout: Callable

    def __init__(self, encoder: Callable, body: Callable, readout: Callable):
        """**Arguments:**

        - `encoder`: a module mapping one feature vector to one state of `body`
            (e.g. `eqx.nn.Linear(num_features, dim, key=...)`).
        - `body`: the depth model: a contdepth model or any callable `body(y, args)`
            mapping one state to one state.
        - `readout`: a module mapping one state to logits of shape `(num_classes,)`.
        """
        if not callable(encoder):
            raise TypeError(
                f"`encoder` must be callable, got {type(encoder).__name__}."
            )
        if not callable(body):
            raise TypeError(
                "`body` must be a depth model (e.g. `cd.EulerResNet`, or any callable "
                f"`body(y, args)`), got {type(body).__name__}."
            )
        if not callable(readout):
            raise TypeError(
                f"`readout` must be callable, got {type(readout).__name__}."
            )
        # Linear encoders fix the state shape: check encoder/body/readout agree now
        # rather than at the first call.
        if isinstance(encoder, eqx.nn.Linear) and encoder.in_features != "scalar":
            x = jax.ShapeDtypeStruct((encoder.in_features,), encoder.weight.dtype)
            state = eqx.filter_eval_shape(encoder, x)
            check_model_state(body, state, "encoder(x)")
            _check_readout(readout, state)
            _check_logits(eqx.filter_eval_shape(readout, state))
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
        check_float_array("x", x)
        enc = self.encoder
        if isinstance(enc, eqx.nn.Linear) and enc.in_features != "scalar":
            if tuple(x.shape) != (enc.in_features,):
                raise ValueError(
                    f"`x` has shape {tuple(x.shape)}, but the encoder expects one "
                    "feature "
                    f"vector of shape ({enc.in_features},) (no batch axis: use "
                    "`jax.vmap`)."
                )
        state = self.encoder(x)
        check_model_state(self.body, state, "encoder(x)", args)
        _check_readout(self.readout, state)
        logits = self.readout(self.body(state, args))
        _check_logits(logits)
        return logits
