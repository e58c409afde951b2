"""Losses and metrics with the signature `f(model, inputs, targets) -> scalar`: the
model is a single-sample callable, `vmap`-ed over the batch's leading axis."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree


def cross_entropy(
    model: Callable, x: Float[Array, "batch ..."], y: Int[Array, " batch"]
) -> Float[Array, ""]:
    """Mean softmax cross-entropy of a single-sample classifier (features → logits)
    against integer class labels. The default loss of [`contdepth.train`][]."""
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def accuracy(
    model: Callable, x: Float[Array, "batch ..."], y: Int[Array, " batch"]
) -> Float[Array, ""]:
    """Fraction of samples whose largest logit is the label (a metric, in `[0, 1]`)."""
    logits = jax.vmap(model)(x)
    return jnp.mean(jnp.argmax(logits, axis=-1) == y)


def mean_squared_error(
    model: Callable, inputs: PyTree[Array], targets: Float[Array, "batch ..."]
) -> Float[Array, ""]:
    """Mean over samples and entries of `(model(input) - target)**2`: regression on
    float targets of any shape (a trajectory, a time series, an image)."""
    predictions = jax.vmap(model)(inputs)
    return jnp.mean(jnp.square(predictions - targets))


def accuracy_count(
    model: Callable, x: Float[Array, "batch features"], y: Int[Array, " batch"]
) -> tuple[Int[Array, ""], Float[Array, ""]]:
    """Number of correct predictions and summed cross-entropy over a batch."""
    logits = jax.vmap(model)(x)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
    loss = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return correct, loss
