"""Validation metrics during training, and early stopping / keep-best."""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Literal

import equinox as eqx
import jax
import numpy as np

from .._validation import check_callable, check_positive_int
from .static_key import Keyed
from .step import split_loss


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Keep the best model by a validation metric, and optionally stop when it stops
    improving. Pass it as `cd.train(..., early_stopping=cd.EarlyStopping(...))`.

    **Arguments:**

    - `monitor`: the name of a validation metric (`"loss"` is always computed).
    - `mode`: `"min"` (lower is better) or `"max"`.
    - `patience`: stop after this many evaluations without improvement; `None`
        never stops early (keep-best only).
    - `min_delta`: an improvement must beat the best value by more than this.
    - `restore_best`: return the best model (and its optimiser state) rather than the
        last one.
    """

    monitor: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {self.mode!r}.")
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(
                f"`min_delta` must be a finite number >= 0, got {self.min_delta!r}."
            )

    def improves(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


def check_metrics(metrics, loss_fn, default_extra: Mapping) -> dict[str, Callable]:
    """The metrics to evaluate: `"loss"` (the training loss) first, then the user's
    (`metrics=None` means the defaults of the loss, e.g. accuracy for classification).
    """
    if metrics is None:
        metrics = dict(default_extra)
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "`metrics` must be a dict mapping names to functions `f(model, inputs, "
            f"targets) -> scalar`, got {type(metrics).__name__}."
        )
    out = {"loss": loss_fn}
    for name, fn in metrics.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"`metrics` keys must be non-empty strings, got {name!r}.")
        out[name] = check_callable(f"metrics[{name!r}]", fn)
    return out


@eqx.filter_jit
def _evaluate(metrics: Keyed, model, inputs, targets):
    return {
        name: split_loss(fn(model, inputs, targets), fn)[0]
        for name, fn in metrics.value.items()
    }


class Validator:
    """Evaluates the metrics every `every` steps and tracks the best model."""

    def __init__(self, metrics: dict, data, every: int, early: EarlyStopping | None):
        if early is not None and early.monitor not in metrics:
            raise ValueError(
                f"`early_stopping.monitor` is {early.monitor!r}, not one of the "
                f"validation metrics {sorted(metrics)}."
            )
        self.metrics = Keyed(metrics)
        self.data = data
        self.every = every
        self.early = early
        self.history: dict[str, list] = {"step": [], **{k: [] for k in metrics}}
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.best_state = None  # (model, opt_state) at the best step
        self.stale = 0  # evaluations since the last improvement

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def record(self, step: int, model, opt_state) -> dict[str, float]:
        values = jax.device_get(_evaluate(self.metrics, model, *self.data))
        self.history["step"].append(step)
        for name, v in values.items():
            self.history[name].append(float(v))
        if self.early is not None:
            improved = self._track(self.early, step, float(values[self.early.monitor]))
            if improved and self.early.restore_best:
                self.best_state = (model, opt_state)
        return {k: float(v) for k, v in values.items()}

    def should_stop(self) -> bool:
        e = self.early
        return e is not None and e.patience is not None and self.stale >= e.patience

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue the history (and best value) of a resumed run."""
        for k in self.history:
            self.history[k] = list(arrays.get(f"val:{k}", np.zeros(0)).tolist())
        if self.early is not None:
            for step, value in zip(
                self.history["step"], self.history[self.early.monitor]
            ):
                self._track(self.early, int(step), value)

    def _track(self, early: EarlyStopping, step: int, value: float) -> bool:
        """Update the best value and the evaluations since; True if `value` improved."""
        if early.improves(value, self.best_value):
            self.best_step, self.best_value, self.stale = step, value, 0
            return True
        self.stale += 1
        return False

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
            for k, v in self.history.items()
        }
