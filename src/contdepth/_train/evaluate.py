from collections.abc import Callable

import equinox as eqx
import jax

from .._validation import check_callable, check_positive_int
from .data import check_data, check_labels
from .loss import accuracy_count


_count = eqx.filter_jit(accuracy_count)


def evaluate(
    model: Callable, data: tuple[jax.Array, jax.Array], *, batch_size: int = 1024
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a single-sample classifier on a dataset.

    **Arguments:**

    - `model`: a module mapping one feature vector to logits.
    - `data`: a `(features, labels)` pair, labels class indices in `[0, C)` (`C` the
        size of the model's logits).
    - `batch_size`: evaluation chunk size (memory only; results do not depend on it).

    **Returns:** `{"accuracy": float in [0, 1], "loss": float}`.
    """
    check_callable("model", model)
    x, y = check_data("data", data)
    check_labels("data", model, x, y)
    batch_size = check_positive_int("batch_size", batch_size)
    n = x.shape[0]
    correct, total_loss = 0, 0.0
    for start in range(0, n, batch_size):
        c, loss = _count(
            model, x[start : start + batch_size], y[start : start + batch_size]
        )
        correct += int(c)
        total_loss += float(loss)
    return {"accuracy": correct / n, "loss": total_loss / n}
