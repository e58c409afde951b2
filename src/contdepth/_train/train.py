import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray, PyTree

from .._distributed.mesh import (
    batch_sharding,
    check_divisible,
    replicated,
    resolve_mesh,
)
from .._optional import progress_bar as tqdm
from .._validation import check_bool, check_callable, check_key, check_positive_int
from .checkpointing import check_checkpoint_dir, CheckpointManager, run_fingerprint
from .data import (
    batch_indices,
    check_batch_size,
    check_data,
    check_labels,
    num_samples,
    take,
)
from .loss import accuracy, cross_entropy
from .static_key import Keyed
from .step import split_loss, update, with_clipping
from .validation import check_metrics, EarlyStopping, Validator


_DEFAULT_OPTIMIZER = optax.adam(1e-3)
_Model = TypeVar("_Model", bound=eqx.Module)


@eqx.filter_jit
def _sampled_step(
    loss_fn: Keyed,
    optimizer: Keyed,
    batch_size,
    mesh,
    model,
    opt_state,
    inputs,
    targets,
    key,
    index,
):
    """`step.update` on the batch of step `index` (drawn inside the compiled step)."""
    idx = batch_indices(key, index, num_samples(inputs), batch_size)
    xb, yb = take(inputs, idx), take(targets, idx)
    if mesh is not None:  # data parallel: split the batch, XLA reduces the grads
        split = functools.partial(
            jax.lax.with_sharding_constraint, shardings=batch_sharding(mesh)
        )
        xb, yb = jax.tree.map(split, xb), jax.tree.map(split, yb)
    return update(loss_fn.value, optimizer.value, model, opt_state, xb, yb)


def train(
    model: _Model,
    train_data: tuple[Any, Any],
    *,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    loss_fn: Callable | None = None,
    optimizer: optax.GradientTransformation | None = None,
    clip_norm: float | None = None,
    opt_state: PyTree | None = None,
    start_step: int = 0,
    validation_data: tuple[Any, Any] | None = None,
    eval_every: int | None = None,
    metrics: Mapping[str, Callable] | None = None,
    early_stopping: EarlyStopping | None = None,
    progress: bool = True,
    mesh=None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
) -> tuple[_Model, dict[str, Any]]:
    """Train a single-sample model with any loss and any optax optimiser.

    Step `i` uses the batch drawn from `key` and `i` alone (without replacement within
    each epoch), so a run is reproducible bit for bit on one machine, and a run
    continued from step `s` — from a checkpoint, or from a saved model and optimiser
    state with `start_step=s` — ends bit-identical to an uninterrupted one. The update
    is [`contdepth.make_train_step`][]'s, compiled once per model structure and
    batch shape and cached across calls: a second `cd.train` of a same-structure model
    with equal settings compiles nothing.

    **Arguments:**

    - `model`: a single-sample module (for the default loss: features → logits, e.g.
        [`contdepth.Classifier`][]).
    - `train_data`: an `(inputs, targets)` pair; each an array or a pytree of arrays
        with a shared leading sample axis `n` (float targets of any shape are fine).
        For the default loss: features `(n, ...)` and integer labels `(n,)` in
        `[0, C)`, `C` the size of the logits (checked).
    - `steps`: train until this many steps have been taken in all (the call performs
        `steps - start_step` of them).
    - `batch_size`: samples per step, `<= n`.
    - `key`: a `jax.random.PRNGKey` for the batch order.
    - `loss_fn`: `loss_fn(model, inputs, targets) -> scalar` or `-> (scalar, aux)`, on
        a batch; default `cd.losses.cross_entropy` (integer labels).
    - `optimizer`: an optax transformation (learning-rate schedules included); default
        `optax.adam(1e-3)`.
    - `clip_norm`: if given, clip gradients to this global norm first.
    - `opt_state`: the optimiser state to start from (e.g. `history["opt_state"]`
        of an earlier call, or `cd.load(...).opt_state`); default a fresh one. Its
        structure must match `optimizer` (with the clipping state first when
        `clip_norm` is set).
    - `start_step`: the index of the first step, for continuing a run: batches (and,
        through `opt_state`, learning-rate schedules) continue from there.
    - `validation_data`: an `(inputs, targets)` pair evaluated (as one batch) every
        `eval_every` steps and after the last one.
    - `eval_every`: steps between validations; default `max(1, steps // 20)`.
    - `metrics`: a dict `name -> f(model, inputs, targets) -> scalar` evaluated on the
        validation data next to `"loss"` (the training loss); default `{"accuracy":
        cd.losses.accuracy}` for the default loss, `{}` otherwise.
    - `early_stopping`: a [`contdepth.EarlyStopping`][]: keep the best model by a
        validation metric, and stop after `patience` evaluations without improvement.
    - `progress`: show a progress bar with the running loss (and validation loss).
    - `mesh`: `None` (one device), `"auto"` (all devices) or a one-axis
        `jax.sharding.Mesh` from [`contdepth.make_mesh`][]: data parallelism, each
        batch split over the devices (`batch_size` must be divisible by their number),
        parameters and optimiser state replicated, gradients all-reduced by XLA. Same
        batches, same result as one device up to summation order.
    - `checkpoint_dir`: if given, a directory (created if needed) where the model,
        optimiser state and history are saved every `checkpoint_every` steps and at the
        end, as `step-XXXXXXXX.ckpt` files written atomically (see
        [`contdepth.save`][]); the two newest are kept, plus `best.ckpt` under
        `early_stopping`. A failed save warns and keeps the previous checkpoint.
    - `checkpoint_every`: steps between checkpoints.
    - `resume`: with a `checkpoint_dir`, continue from its newest readable checkpoint
        (truncated or corrupted files are skipped with a warning). It must come from
        this run: the same `key`, `batch_size`, `clip_norm`, loss, data, model
        configuration and optimiser-state structure, else `ValueError`. `model` is
        then only the template the checkpoint is loaded into. `resume=False` starts
        over and replaces the directory's checkpoints as new ones are written.

    **Raises:**

    `FloatingPointError` if the loss or the gradient norm becomes NaN or inf (checked
    every `max(1, steps // 50)` steps), or the weights do (checked before every
    checkpoint, so a diverged model is never saved as a good checkpoint).

    **Returns:**

    `(trained_model, history)`, `history` a dict with

    - `"loss"`, `"grad_norm"`: NumPy arrays, one entry per step (before each update;
        on resume the first entries come from the checkpoint);
    - `"aux"`: the `aux` of a `(loss, aux)` loss stacked over steps, else `None`;
    - `"validation"`: `{"step": ..., "loss": ..., <metric>: ...}` arrays (empty
        without `validation_data`);
    - `"opt_state"`: the optimiser state that goes with the returned model — pass it
        back as `opt_state=` (with `start_step=`) or to `cd.save` to continue later;
    - `"best_step"`, `"best_value"`, `"stopped_at"`: early stopping's outcome (`None`
        when unused or not triggered);
    - `"seconds"` (wall time of this call, compilation included), `"steps"` (steps
        taken in all) and `"resumed_from"` (the first step of this call).
    """
    check_callable("model", model)
    default_loss = loss_fn is None
    loss_fn = cross_entropy if default_loss else check_callable("loss_fn", loss_fn)
    inputs, targets = check_data("train_data", train_data, labels=default_loss)
    if default_loss:
        check_labels("train_data", model, inputs, targets)
    steps = check_positive_int("steps", steps)
    start_step = _check_start_step(start_step, steps)
    batch_size = check_batch_size(batch_size, num_samples(inputs))
    key = check_key("key", key)
    progress = check_bool("progress", progress)
    _check_loss_shape(loss_fn, model, inputs, targets, batch_size)
    optimizer = with_clipping(
        _DEFAULT_OPTIMIZER if optimizer is None else optimizer, clip_norm
    )
    clip_norm = None if clip_norm is None else float(clip_norm)
    validator = _make_validator(
        validation_data,
        eval_every,
        metrics,
        early_stopping,
        loss_fn,
        default_loss,
        model,
        steps,
    )
    opt_state = _check_opt_state(opt_state, optimizer, model)

    manager = None
    if checkpoint_dir is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        resume = check_bool("resume", resume)
        manager = CheckpointManager(
            check_checkpoint_dir(checkpoint_dir),
            run_fingerprint(key, inputs, targets, batch_size, clip_norm, loss_fn),
        )

    first, prior = start_step, None
    if manager is not None and resume:
        restored = manager.restore(model, opt_state, steps)
        if restored is not None:
            model, opt_state, first, prior = restored
            if validator is not None:
                validator.restore(prior)
                _restore_best(validator, manager, model, opt_state)
        manager.clean_temporaries()

    mesh = resolve_mesh(mesh)
    if mesh is not None:
        check_divisible("batch_size", batch_size, mesh)
        # Parameters and the (small) dataset replicated; each step's batch is split.
        model = eqx.filter_shard(model, replicated(mesh))
        opt_state = eqx.filter_shard(opt_state, replicated(mesh))
        inputs, targets = jax.device_put((inputs, targets), replicated(mesh))
    static = (Keyed(loss_fn), Keyed(optimizer), batch_size, mesh)

    def step_fn(model, opt_state, i):
        return _sampled_step(
            *static,
            model,
            opt_state,
            inputs,
            targets,
            key,
            jnp.asarray(i, dtype=jnp.int32),
        )

    record = _Record(prior)
    start = time.perf_counter()
    model, opt_state, stopped_at = _loop(
        step_fn,
        model,
        opt_state,
        range(first, steps),
        record,
        validator,
        manager,
        checkpoint_every,
        progress,
    )
    if validator is not None and validator.best_state is not None:
        model, opt_state = validator.best_state
    history = record.history()
    history |= {
        "validation": {} if validator is None else validator.arrays(),
        "opt_state": opt_state,
        "best_step": None if validator is None else validator.best_step,
        "best_value": None if validator is None else validator.best_value,
        "stopped_at": stopped_at,
        "seconds": time.perf_counter() - start,
        "steps": first + record.count if stopped_at is not None else steps,
        "resumed_from": first,
    }
    return model, history


def _loop(
    step_fn,
    model,
    opt_state,
    indices: range,
    record,
    validator,
    manager,
    checkpoint_every: int,
    progress: bool,
):
    """Run the steps `indices`, validating, checking and checkpointing on the way.

    **Returns:** `(model, opt_state, stopped_at)`, `stopped_at` the step at which early
    stopping ended the run (else `None`)."""
    first, steps = indices.start, indices.stop
    refresh = max(1, steps // 50)
    stopped_at = None
    with tqdm(
        total=steps, initial=first, disable=not progress, desc="train", unit="step"
    ) as bar:
        for i in indices:
            model, opt_state, loss, aux, gnorm = step_fn(model, opt_state, i)
            record.append(loss, gnorm, aux)
            done = i + 1
            save_now = manager is not None and (
                done % checkpoint_every == 0 or done == steps
            )
            validate = validator is not None and validator.due(done, steps)
            if save_now or validate or done % refresh == 0 or done == steps:
                record.check_finite(first, manager)
                bar.set_postfix(loss=f"{float(loss):.4g}")
                bar.update(done - bar.n)
            if validate and validator is not None:
                values = validator.record(done, model, opt_state)
                bar.set_postfix(loss=f"{float(loss):.4g}", val=f"{values['loss']:.4g}")
                if manager is not None and validator.best_step == done:
                    manager.save_best(done, model, opt_state)
                if validator.should_stop():
                    stopped_at, save_now = done, manager is not None
            if save_now and manager is not None:
                _check_finite_model(model, done, manager)
                extra = record.arrays()
                if validator is not None:
                    extra |= {f"val:{k}": v for k, v in validator.arrays().items()}
                manager.save(done, model, opt_state, extra)
            if stopped_at is not None:
                break
    return model, opt_state, stopped_at


def _check_start_step(start_step, steps: int) -> int:
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)):
        raise TypeError(f"`start_step` must be an int, got {start_step!r}.")
    if not 0 <= start_step < steps:
        raise ValueError(
            f"`start_step` must be in [0, steps) = [0, {steps}), got {start_step}: "
            "`steps` counts all steps of the run, including those before `start_step`."
        )
    return int(start_step)


def _check_loss_shape(loss_fn, model, inputs, targets, batch_size: int) -> None:
    """Trace `loss_fn` on one batch's shapes (nothing runs): an early, clear error."""
    batch = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype),
        (inputs, targets),
    )
    out = eqx.filter_eval_shape(loss_fn, model, *batch)
    split_loss(out, loss_fn)


def _check_opt_state(opt_state, optimizer, model):
    fresh = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    if opt_state is None:
        return fresh
    want = jax.tree.structure(fresh)
    got = jax.tree.structure(opt_state)
    shapes = lambda t: [(jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(t)]
    if want != got or shapes(fresh) != shapes(opt_state):
        raise ValueError(
            "`opt_state` does not fit `optimizer` and `model`: expected the structure "
            f"of `optimizer.init(params)`,\n  {want}\ngot\n  {got}\n(or leaves of "
            "other shapes/dtypes). Pass the state produced by the same optimizer (with "
            "the same `clip_norm`) for a model of the same structure."
        )
    return opt_state


def _make_validator(data, every, metrics, early, loss_fn, default_loss, model, steps):
    if data is None:
        if early is not None or metrics is not None or every is not None:
            raise ValueError(
                "`early_stopping`, `metrics` and `eval_every` need `validation_data`."
            )
        return None
    data = check_data("validation_data", data, labels=default_loss)
    if default_loss:
        check_labels("validation_data", model, *data)
    every = (
        max(1, steps // 20)
        if every is None
        else check_positive_int("eval_every", every)
    )
    if early is not None and not isinstance(early, EarlyStopping):
        raise TypeError(
            "`early_stopping` must be a `cd.EarlyStopping(...)`, got "
            f"{type(early).__name__}."
        )
    defaults = {"accuracy": accuracy} if default_loss else {}
    return Validator(check_metrics(metrics, loss_fn, defaults), data, every, early)


def _restore_best(validator, manager, model, opt_state) -> None:
    if validator.early is None or not validator.early.restore_best:
        return
    best = manager.restore_best(model, opt_state, validator.best_step)
    if best is not None:
        validator.best_state = best


class _Record:
    """Per-step losses, gradient norms and aux values, on device until read."""

    def __init__(self, prior: dict | None):
        self.prior = prior or {}
        self.losses, self.norms, self.aux = [], [], []
        self.checked = 0  # losses[:checked] are known to be finite

    @property
    def count(self) -> int:
        return len(self.losses)

    def append(self, loss, gnorm, aux) -> None:
        self.losses.append(loss)
        self.norms.append(gnorm)
        if aux is not None:
            self.aux.append(aux)

    def check_finite(self, first: int, manager) -> None:
        """`FloatingPointError` at the first non-finite loss or gradient norm."""
        for name, values in (("loss", self.losses), ("gradient norm", self.norms)):
            recent = np.asarray(jax.device_get(values[self.checked :]))
            bad = np.flatnonzero(~np.isfinite(recent))
            if bad.size:
                step = first + self.checked + int(bad[0])
                what = f"the {name} is {recent[bad[0]]} at step {step}"
                raise _diverged(what, manager)
        self.checked = len(self.losses)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, values in (("loss", self.losses), ("grad_norm", self.norms)):
            new = np.asarray(jax.device_get(values))
            old = self.prior.get(name)
            out[name] = new if old is None else np.concatenate([old, new])
        return out

    def history(self) -> dict[str, Any]:
        aux = None
        if self.aux:
            aux = jax.tree.map(lambda *a: np.stack(a), *jax.device_get(self.aux))
        return self.arrays() | {"aux": aux}


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


def _check_finite_model(model, step: int, manager) -> None:
    # The loss is computed before each update, so a finite loss does not prove the
    # updated weights are finite: check them before they become a checkpoint.
    params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in params):
        raise _diverged(f"the weights hold NaN or inf after step {step}", manager)
