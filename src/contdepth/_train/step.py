"""The training update, compiled once per model structure: `cd.make_train_step`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from .._validation import check_callable, check_positive_float
from .static_key import Keyed


LossFn = Callable[..., Any]


def global_norm(tree) -> Float[Array, ""]:
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))


def split_loss(out, loss_fn) -> tuple[Float[Array, ""], Any]:
    """`loss_fn`'s output as `(loss, aux)`: a scalar, or a `(scalar, aux)` pair."""
    loss: Any
    if isinstance(out, tuple) and len(out) == 2:
        loss, aux = out
    else:
        loss, aux = out, None
    shape = getattr(loss, "shape", None)
    dtype = getattr(loss, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        name = getattr(loss_fn, "__qualname__", type(loss_fn).__name__)
        got = (
            f"shape {shape}, dtype {dtype}" if shape is not None else type(out).__name__
        )
        raise TypeError(
            f"`loss_fn` ({name}) must return a floating scalar or a `(scalar, aux)` "
            f"pair, got {got}. Reduce it to a mean over the batch, e.g. "
            "`jnp.mean(...)`."
        )
    return loss, aux


def update(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    model,
    opt_state,
    inputs,
    targets,
):
    """One optimiser step on one batch (traced; call it under `jit`).

    **Returns:** `(model, opt_state, loss, aux, grad_norm)`, the loss and the gradient
    norm (before any clipping) evaluated at the incoming model.
    """

    def objective(m):
        return split_loss(loss_fn(m, inputs, targets), loss_fn)

    (loss, aux), grads = eqx.filter_value_and_grad(objective, has_aux=True)(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss, aux, global_norm(grads)


@eqx.filter_jit
def _step(loss_fn: Keyed, optimizer: Keyed, model, opt_state, inputs, targets):
    return update(loss_fn.value, optimizer.value, model, opt_state, inputs, targets)


def with_clipping(optimizer, clip_norm):
    """`optimizer` preceded by global-norm clipping when `clip_norm` is given."""
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation such as "
            f"`optax.adam(1e-3)`, got {type(optimizer).__name__}."
        )
    if clip_norm is None:
        return optimizer
    clip_norm = check_positive_float("clip_norm", clip_norm)
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)


class TrainStep(eqx.Module):
    """A compiled training step, from [`contdepth.make_train_step`][].

    `step(model, opt_state, (inputs, targets))` returns `(model, opt_state, loss,
    aux)`. It is compiled on first use for each model structure (classes,
    hyper-parameters, shapes, dtypes) and batch shape, and the compilation is shared
    by every `TrainStep` built from an equal loss and optimiser — also ones rebuilt
    from scratch, such as a second `optax.adam(1e-3)`.
    """

    loss_fn: LossFn = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)

    def init(self, model) -> PyTree:
        """The optimiser state for the floating-point arrays of `model`."""
        return self.optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    def __call__(self, model, opt_state, batch):
        """**Arguments:** `model` (a single-sample module), `opt_state` (from
        `init` or a previous step), `batch = (inputs, targets)` (pytrees of arrays with
        a shared leading batch axis, passed to `loss_fn` as they are).

        **Returns:** `(model, opt_state, loss, aux)`; `aux` is `None` unless `loss_fn`
        returns a `(loss, aux)` pair.
        """
        inputs, targets = _check_batch(batch)
        model, opt_state, loss, aux, _ = _step(
            Keyed(self.loss_fn),
            Keyed(self.optimizer),
            model,
            opt_state,
            inputs,
            targets,
        )
        return model, opt_state, loss, aux


def _check_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"`batch` must be an `(inputs, targets)` pair, got {type(batch).__name__}."
        )
    return batch


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    clip_norm: float | None = None,
) -> TrainStep:
    """A jitted optimiser step to drive from your own loop, in optax's init/update
    style; [`contdepth.train`][] runs the same update.

    ```python
    step = cd.make_train_step(loss_fn, optax.adam(1e-3))
    opt_state = step.init(model)
    for inputs, targets in batches:
        model, opt_state, loss, aux = step(model, opt_state, (inputs, targets))
    ```

    **Arguments:**

    - `loss_fn`: `loss_fn(model, inputs, targets)` returning a floating scalar, or a
        `(scalar, aux)` pair whose `aux` (any pytree) is handed back. It sees the whole
        batch: `vmap` the single-sample model yourself (see `cd.losses`).
    - `optimizer`: any `optax.GradientTransformation` (schedules included).
    - `clip_norm`: if given, gradients are first clipped to this global norm
        (`optax.clip_by_global_norm`, part of the optimiser state).

    **Returns:** a [`contdepth.TrainStep`][].
    """
    check_callable("loss_fn", loss_fn)
    return TrainStep(loss_fn, with_clipping(optimizer, clip_norm))
