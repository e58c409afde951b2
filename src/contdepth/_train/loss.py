import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int


def cross_entropy(
    model: eqx.Module, x: Float[Array, "batch features"], y: Int[Array, " batch"]
) -> Float[Array, ""]:
    """Mean softmax cross-entropy of a single-sample classifier vmapped over a batch."""
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def accuracy_count(
    model: eqx.Module, x: Float[Array, "batch features"], y: Int[Array, " batch"]
) -> tuple[Int[Array, ""], Float[Array, ""]]:
    """Number of correct predictions and summed cross-entropy over a batch."""
    logits = jax.vmap(model)(x)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
    loss = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return correct, loss
