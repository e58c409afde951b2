import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._validation import check_finite_array, check_positive_int


def check_data(name: str, data, *, labels: bool = True):
    """`data` must be an `(inputs, targets)` pair of arrays, or of pytrees of arrays,
    every leaf sharing a non-zero leading (sample) axis; floating leaves must be finite.

    With `labels=True` (the default cross-entropy loss) the pair must be floating
    features `(n, ...)` and integer class labels `(n,)`.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        pair = "(features, labels)" if labels else "(inputs, targets)"
        raise TypeError(
            f"`{name}` must be a `{pair}` pair, got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            + ". The `cd.datasets` functions return `(train, test)`, each such a pair."
        )
    if labels:
        _check_classification(name, *data)
    inputs, targets = jax.tree.map(jnp.asarray, tuple(data))
    sizes = {}
    for part, tree in (("0", inputs), ("1", targets)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            where = f"{name}[{part}]{jax.tree_util.keystr(path)}"
            if leaf.ndim == 0:
                raise ValueError(
                    f"`{where}` is a scalar; every array needs a leading sample axis."
                )
            sizes[where] = leaf.shape[0]
            check_finite_array(where, leaf)
    if not sizes:
        raise ValueError(f"`{name}` holds no arrays.")
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        shown = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            f"Every array of `{name}` must share a non-zero leading (sample) axis, got "
            f"{shown}."
        )
    return inputs, targets


def _check_classification(name, x, y) -> None:
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}[0]` (features) must be a floating-point array, got "
            f"{getattr(x, 'dtype', type(x).__name__)}."
        )
    if not hasattr(y, "dtype") or not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            f"`{name}[1]` (labels) must be an integer array of class indices, got "
            f"{getattr(y, 'dtype', type(y).__name__)}. For other targets pass a "
            "`loss_fn` (e.g. `cd.losses.mean_squared_error`)."
        )
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(
            f"`{name}` features of shape {tuple(x.shape)} and labels of shape "
            f"{tuple(y.shape)} must share a non-zero leading (sample) axis, labels 1-D."
        )


def num_samples(data) -> int:
    return jax.tree.leaves(data)[0].shape[0]


def take(tree, idx):
    """Rows `idx` of every leaf of `tree`."""
    return jax.tree.map(lambda a: a[idx], tree)


def check_labels(name: str, model, x, y) -> None:
    """Labels must be class indices in `[0, C)`, `C` the size of `model`'s logits
    (found by one `jax.eval_shape`, without running the model)."""
    sample = jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    try:
        logits = eqx.filter_eval_shape(model, sample)
    except (TypeError, ValueError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(
            f"`model` cannot be applied to one sample of `{name}[0]` (features of "
            f"shape {tuple(x.shape)}, so a sample has shape {tuple(x.shape[1:])}): {e}"
        ) from e
    shape = getattr(logits, "shape", None)
    if shape is None or len(shape) != 1:
        got = f"shape {tuple(shape)}" if shape is not None else type(logits).__name__
        raise ValueError(
            f"`model` must map one sample of `{name}[0]` (shape {tuple(x.shape[1:])}) "
            f"to a vector of logits, got {got}."
        )
    num_classes = shape[0]
    labels = np.asarray(y)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        lo, hi = int(labels.min()), int(labels.max())
        if set(np.unique(labels).tolist()) <= {-1, 1}:
            hint = " Labels in {-1, 1} map to classes with `(labels + 1) // 2`."
        elif lo >= 0:
            hint = (
                f" Remap them to 0, ..., {num_classes - 1}, or build the model with "
                f"`num_classes={hi + 1}`."
            )
        else:
            hint = f" Remap them to 0, ..., {num_classes - 1}."
        raise ValueError(
            f"`{name}[1]` (labels) must be class indices in [0, {num_classes}) for a "
            f"model with {num_classes} logits, got {labels[bad[0]]} at index "
            f"{int(bad[0])} ({bad.size} of {labels.size} labels outside; labels span "
            f"[{lo}, {hi}]).{hint}"
        )


def batch_indices(key, step, num_samples: int, batch_size: int):
    """The sample indices of training step `step`: epoch `e = step // (n // b)` draws a
    permutation from `fold_in(key, e)`, and the step takes its next `b` entries.

    A pure function of `(key, step)`: a run resumed at step `s` sees exactly the batches
    an uninterrupted run sees, and every sample is visited once per epoch (the last
    `n mod b` positions of each permutation, different samples every epoch, are
    skipped).
    """
    steps_per_epoch = num_samples // batch_size
    epoch = step // steps_per_epoch
    position = step % steps_per_epoch
    perm = jr.permutation(jr.fold_in(key, epoch), num_samples)
    return jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)


def check_batch_size(batch_size, num_samples: int) -> int:
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > num_samples:
        raise ValueError(
            f"`batch_size` ({batch_size}) exceeds the number of training samples "
            f"({num_samples}): pass `batch_size <= {num_samples}`."
        )
    return batch_size
