import os
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
from .._validation import (
    check_bool,
    check_callable,
    check_key,
    check_positive_float,
    check_positive_int,
)
from .checkpointing import CheckpointManager, check_checkpoint_dir, run_fingerprint
from .data import batch_indices, check_batch_size, check_data, check_labels
from .loss import cross_entropy


def _global_norm(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))


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
        return model, opt_state, loss, _global_norm(grads)

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
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
) -> tuple[eqx.Module, dict[str, Any]]:
    """Train a single-sample classifier with softmax cross-entropy and optax.

    Batches are drawn without replacement within each epoch from `key` and the step
    index alone, so the run is reproducible bit for bit on one machine, and a run
    resumed from a checkpoint ends bit-identical to an uninterrupted one. The update
    step is compiled once (`eqx.filter_jit`) and never recompiles during the run.

    **Arguments:**

    - `model`: a module mapping one feature vector to logits (e.g.
        [`contdepth.Classifier`][]); it is `vmap`-ed over each batch.
    - `train_data`: a `(features, labels)` pair, features `(n, ...)` floating point,
        labels `(n,)` integer class indices in `[0, C)`, `C` the size of the model's
        logits (checked: anything else is a `ValueError`).
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
    - `checkpoint_dir`: if given, a directory (created if needed) where the model,
        optimiser state and loss history are saved every `checkpoint_every` steps and
        at the end, as `step-XXXXXXXX.ckpt` files written atomically (see
        [`contdepth.save`][]); the two newest are kept. A failed save warns and keeps
        the previous checkpoint; training goes on.
    - `checkpoint_every`: steps between checkpoints.
    - `resume`: with a `checkpoint_dir`, continue from its newest readable checkpoint
        (truncated or corrupted files are skipped with a warning). It must come from
        this run: the same `key`, `batch_size`, `clip_norm`, data, model
        configuration and optimiser-state structure, else `ValueError`. `model` is
        then only the template the checkpoint is loaded into. `resume=False` starts
        over and replaces the directory's checkpoints as new ones are written.

    **Raises:**

    `FloatingPointError` if the loss or the gradient norm becomes NaN or inf (checked
    every `max(1, steps // 50)` steps), or the weights do (checked before every
    checkpoint, so a diverged model is never saved as a good checkpoint).

    **Returns:**

    `(trained_model, history)` with `history["loss"]` and `history["grad_norm"]` (NumPy
    arrays of length `steps`, before each update; on resume the first entries come
    from the checkpoint), `history["seconds"]` (wall time of this call, including
    compilation), `history["steps"]` and `history["resumed_from"]` (the step the run
    resumed from; 0 for a fresh run).
    """
    check_callable("model", model)
    x, y = check_data("train_data", train_data)
    check_labels("train_data", model, x, y)
    steps = check_positive_int("steps", steps)
    batch_size = check_batch_size(batch_size, x.shape[0])
    key = check_key("key", key)
    progress = check_bool("progress", progress)
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

    manager = None
    if checkpoint_dir is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        resume = check_bool("resume", resume)
        manager = CheckpointManager(
            check_checkpoint_dir(checkpoint_dir),
            run_fingerprint(key, x, y, batch_size, clip_norm),
        )

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    first, prior_losses, prior_norms = 0, None, None
    if manager is not None and resume:
        restored = manager.restore(model, opt_state, steps)
        if restored is not None:
            model, opt_state, first, prior_losses, prior_norms = restored
        manager.clean_temporaries()

    mesh = resolve_mesh(mesh)
    if mesh is not None:
        check_divisible("batch_size", batch_size, mesh)
        # Parameters and the (small) dataset replicated; each step's batch is split.
        model = eqx.filter_shard(model, replicated(mesh))
        opt_state = eqx.filter_shard(opt_state, replicated(mesh))
        x, y = jax.device_put((x, y), replicated(mesh))
    step_fn = _make_step(optimizer, batch_size, mesh)
    losses, grad_norms = [], []
    checked = 0  # losses[:checked] are known to be finite

    def history_so_far():
        parts = [np.asarray(jnp.stack(losses))] if losses else []
        norms = [np.asarray(jnp.stack(grad_norms))] if grad_norms else []
        if prior_losses is not None:
            parts, norms = [prior_losses, *parts], [prior_norms, *norms]
        return np.concatenate(parts), np.concatenate(norms)

    start = time.perf_counter()
    refresh = max(1, steps // 50)
    with tqdm(
        total=steps, initial=first, disable=not progress, desc="train", unit="step"
    ) as bar:
        for i in range(first, steps):
            model, opt_state, loss, gnorm = step_fn(
                model, opt_state, x, y, key, jnp.asarray(i, dtype=jnp.int32)
            )
            losses.append(loss)
            grad_norms.append(gnorm)
            save_now = manager is not None and (
                (i + 1) % checkpoint_every == 0 or i + 1 == steps
            )
            if save_now or (i + 1) % refresh == 0 or i + 1 == steps:
                checked = _check_finite(losses, grad_norms, checked, first, manager)
                bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update((i + 1) - bar.n)
            if save_now:
                _check_finite_model(model, i + 1, manager)
                manager.save(i + 1, model, opt_state, *history_so_far())
    loss_history, norm_history = history_so_far()
    history = {
        "loss": loss_history,
        "grad_norm": norm_history,
        "seconds": time.perf_counter() - start,
        "steps": steps,
        "resumed_from": first,
    }
    return model, history


def _diverged(what: str, manager) -> FloatingPointError:
    kept = (
        f" The last good checkpoint (step {manager.last_step}) is kept in "
        f"{str(manager.directory)!r}."
        if manager is not None and manager.last_step is not None
        else ""
    )
    return FloatingPointError(
        f"Training diverged: {what}. Lower the learning rate, pass `clip_norm=`, or "
        f"look for NaN/inf in the model's weights.{kept}"
    )


def _check_finite(losses, grad_norms, checked: int, first: int, manager) -> int:
    """Raise `FloatingPointError` at the first non-finite loss or gradient norm in
    `[checked:]`; return the new `checked`."""
    for name, values in (("loss", losses), ("gradient norm", grad_norms)):
        recent = np.asarray(jnp.stack(values[checked:]))
        bad = np.flatnonzero(~np.isfinite(recent))
        if bad.size:
            step = first + checked + int(bad[0])
            raise _diverged(f"the {name} is {recent[bad[0]]} at step {step}", manager)
    return len(losses)


def _check_finite_model(model, step: int, manager) -> None:
    # The loss is computed before each update, so a finite loss does not prove the
    # updated weights are finite: check them before they become a checkpoint.
    params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in params):
        raise _diverged(f"the weights hold NaN or inf after step {step}", manager)
