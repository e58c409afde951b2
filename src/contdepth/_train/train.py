import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._distributed.mesh import batch_sharding, check_divisible, replicated, resolve_mesh
from .._validation import check_positive_float, check_positive_int
from .data import batch_indices, check_batch_size, check_data
from .loss import cross_entropy


def _make_step(optimizer: optax.GradientTransformation, batch_size: int, mesh=None):
    @eqx.filter_jit
    def step(model, opt_state, x, y, key, index):
        idx = batch_indices(key, index, x.shape[0], batch_size)
        xb, yb = x[idx], y[idx]
        if mesh is not None:  # data parallel: split the batch, XLA reduces the grads
            xb = jax.lax.with_sharding_constraint(xb, batch_sharding(mesh))
            yb = jax.lax.with_sharding_constraint(yb, batch_sharding(mesh))
        loss, grads = eqx.filter_value_and_grad(cross_entropy)(model, xb, yb)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        return model, opt_state, loss, optax.global_norm(grads)

    return step


def train(
    model: eqx.Module,
    train_data: tuple[jax.Array, jax.Array],
    *,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    clip_norm: float | None = None,
    progress: bool = True,
    mesh=None,
) -> tuple[eqx.Module, dict[str, Any]]:
    """Train a single-sample classifier with softmax cross-entropy and optax.

    Batches are drawn without replacement within each epoch from `key` and the step
    index alone, so the run is reproducible bit for bit on one machine. The update step
    is compiled once (`eqx.filter_jit`) and never recompiles during the run.

    **Arguments:**

    - `model`: a module mapping one feature vector to logits (e.g.
        [`contdepth.Classifier`][]); it is `vmap`-ed over each batch.
    - `train_data`: a `(features, labels)` pair, features `(n, ...)` floating point,
        labels `(n,)` integer.
    - `steps`: number of optimiser steps.
    - `batch_size`: samples per step, `<= n`.
    - `key`: a `jax.random.PRNGKey` for the batch order.
    - `optimizer`: an optax transformation; default `optax.adam(1e-3)`.
    - `clip_norm`: if given, clip gradients to this global norm first
        (`g <- g * clip_norm / ||g||` when `||g|| > clip_norm`).
    - `progress`: show a progress bar with the running loss.
    - `mesh`: `None` (one device), `"auto"` (all devices) or a one-axis
        `jax.sharding.Mesh` from [`contdepth.make_mesh`][]: data parallelism, each
        batch split over the devices (`batch_size` must be divisible by their number),
        parameters and optimiser state replicated, gradients all-reduced by XLA. Same
        batches, same result as one device up to summation order.

    **Returns:**

    `(trained_model, history)` with `history["loss"]` and `history["grad_norm"]` (NumPy
    arrays of length `steps`, before each update), `history["seconds"]` (wall time
    including compilation) and `history["steps"]`.
    """
    x, y = check_data("train_data", train_data)
    steps = check_positive_int("steps", steps)
    batch_size = check_batch_size(batch_size, x.shape[0])
    if optimizer is None:
        optimizer = optax.adam(1e-3)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation such as "
            f"`optax.adam(1e-3)`, got {type(optimizer).__name__}."
        )
    if clip_norm is not None:
        clip_norm = check_positive_float("clip_norm", clip_norm)
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)

    mesh = resolve_mesh(mesh)
    if mesh is not None:
        check_divisible("batch_size", batch_size, mesh)
        # Parameters and the (small) dataset replicated; each step's batch is split.
        model = eqx.filter_shard(model, replicated(mesh))
        x, y = jax.device_put((x, y), replicated(mesh))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step_fn = _make_step(optimizer, batch_size, mesh)
    losses, grad_norms = [], []
    start = time.perf_counter()
    refresh = max(1, steps // 50)
    with tqdm(total=steps, disable=not progress, desc="train", unit="step") as bar:
        for i in range(steps):
            model, opt_state, loss, gnorm = step_fn(
                model, opt_state, x, y, key, jnp.asarray(i, dtype=jnp.int32)
            )
            losses.append(loss)
            grad_norms.append(gnorm)
            if (i + 1) % refresh == 0 or i + 1 == steps:
                bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update((i + 1) - bar.n)
    history = {
        "loss": np.asarray(jnp.stack(losses)),
        "grad_norm": np.asarray(jnp.stack(grad_norms)),
        "seconds": time.perf_counter() - start,
        "steps": steps,
    }
    return model, history
