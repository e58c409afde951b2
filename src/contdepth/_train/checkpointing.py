"""Periodic checkpoints of a training run, and resuming from them.

A run writes `step-XXXXXXXX.ckpt` files (model, optimiser state, loss history) into
its `checkpoint_dir`. Resuming loads the newest readable one; since batches are a pure
function of `(key, step)`, the resumed run then performs exactly the updates the
uninterrupted run would have, bit for bit.
"""

import hashlib
import os
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_with_extra,
    read_header,
    save_with_extra,
)


_NAME = re.compile(r"^step-(\d{8,})\.ckpt$")
_TEMP = re.compile(r"^\.step-\d{8,}\.ckpt\.tmp-")
_KEEP = 2  # the newest checkpoint and the one before it


def run_fingerprint(key, inputs, targets, batch_size: int, clip_norm, loss_fn) -> dict:
    """What must agree for a resumed run to continue *this* run: the batch-order key,
    the batch size, gradient clipping, the loss (by name) and the training data."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key_data = jax.random.key_data(key)
    else:
        key_data = key
    digest = hashlib.sha256()
    for a in jax.tree.leaves((inputs, targets)):
        a = np.asarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return {
        "key": np.asarray(key_data).ravel().tolist(),
        "batch_size": batch_size,
        "clip_norm": clip_norm,
        "data_sha256": digest.hexdigest(),
        "loss": f"{getattr(loss_fn, '__module__', '')}."
        f"{getattr(loss_fn, '__qualname__', type(loss_fn).__name__)}",
    }


def check_checkpoint_dir(checkpoint_dir) -> pathlib.Path:
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(
            "`checkpoint_dir` must be a str or os.PathLike directory, got "
            f"{type(checkpoint_dir).__name__}."
        )
    path = pathlib.Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"`checkpoint_dir` {str(path)!r} exists and is not a directory."
        )
    return path


class CheckpointManager:
    """Writes, prunes and restores the checkpoints of one training run."""

    def __init__(self, directory: pathlib.Path, fingerprint: dict):
        self.directory = directory
        self.fingerprint = fingerprint
        self.mine: list[pathlib.Path] = []  # files of this run, oldest first
        self.last_step: int | None = None

    def _existing(self) -> list[tuple[int, pathlib.Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def restore(self, model, opt_state_like, steps: int):
        """The newest readable checkpoint of this run as `(model, opt_state, step,
        history)` (`history` a dict of NumPy arrays), or `None` when there is none.
        Unreadable (truncated, corrupted) files are skipped with a warning; a
        checkpoint of another run or model configuration is an error."""
        for step, path in self._existing():
            try:
                header, _ = read_header(path)
            except CheckpointError as e:
                warnings.warn(
                    f"Skipping an unreadable checkpoint: {e} Falling back to an "
                    "earlier one.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            saved = header["metadata"].get("contdepth.train")
            if saved != self.fingerprint:
                diff = _fingerprint_difference(saved, self.fingerprint)
                raise CheckpointMismatchError(
                    f"`checkpoint_dir` holds {path.name}, written by another run "
                    f"({diff}). Pass a fresh `checkpoint_dir`, or `resume=False` to "
                    "start over (its checkpoints are then replaced)."
                )
            if step > steps:
                raise ValueError(
                    f"`checkpoint_dir` holds a checkpoint at step {step}, past "
                    f"`steps`={steps}: pass `steps >= {step}` to continue it, or "
                    "`resume=False` to start over."
                )
            # The history arrays' shapes and dtypes are in the header.
            extra_like = {
                d["path"][2:-2]: np.zeros(
                    d["shape"], d["dtype"]
                )  # "['loss']" -> "loss"
                for d in header["trees"]["extra"]["leaves"]
            }
            ckpt, extra = load_with_extra(path, model, opt_state_like, extra_like)
            self.mine = [path]
            self.last_step = step
            return ckpt.model, ckpt.opt_state, step, extra
        return None

    def save_best(self, step: int, model, opt_state) -> None:
        """Write `best.ckpt` (early stopping's best model so far); warn on failure."""
        path = self.directory / "best.ckpt"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_with_extra(
                path, model, opt_state, step, {"contdepth.train": self.fingerprint}, {}
            )
        except Exception as e:
            warnings.warn(
                f"Could not write {str(path)!r} ({type(e).__name__}: {e}).",
                RuntimeWarning,
                stacklevel=3,
            )

    def restore_best(self, model, opt_state_like, step: int | None):
        """`(model, opt_state)` of `best.ckpt` if it holds this run's step `step`."""
        path = self.directory / "best.ckpt"
        if step is None or not path.is_file():
            return None
        try:
            header, _ = read_header(path)
            if header["metadata"].get("contdepth.train") != self.fingerprint:
                return None
            ckpt, _ = load_with_extra(path, model, opt_state_like, {})
        except CheckpointError:
            return None
        return (ckpt.model, ckpt.opt_state) if ckpt.step == step else None

    def clean_temporaries(self) -> None:
        if self.directory.is_dir():
            for p in self.directory.iterdir():
                if _TEMP.match(p.name):
                    p.unlink(missing_ok=True)

    def save(self, step: int, model, opt_state, history: dict) -> bool:
        """Write the checkpoint of `step`; on failure warn, keep the previous one and
        return False (training goes on: the next save retries)."""
        path = self.directory / f"step-{step:08d}.ckpt"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_with_extra(
                path,
                model,
                opt_state,
                step,
                {"contdepth.train": self.fingerprint},
                history,
            )
        except Exception as e:
            previous = self.mine[-1].name if self.mine else "none"
            warnings.warn(
                f"Could not write checkpoint {str(path)!r} ({type(e).__name__}: {e}); "
                f"the previous checkpoint ({previous}) is kept and training continues.",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        self.mine = [p for p in self.mine if p != path] + [path]
        self.last_step = step
        keep = set(self.mine[-_KEEP:])
        for _, p in self._existing():
            if p not in keep:
                p.unlink(missing_ok=True)
        return True


def _fingerprint_difference(saved, current) -> str:
    if not isinstance(saved, dict):
        return "it was not written by `cd.train`"
    names = {
        "key": "`key`",
        "batch_size": "`batch_size`",
        "clip_norm": "`clip_norm`",
        "data_sha256": "`train_data`",
        "loss": "`loss_fn`",
    }
    for k, name in names.items():
        if saved.get(k) != current.get(k):
            return f"different {name}"
    return "different settings"
