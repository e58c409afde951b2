"""Reducing per-state measurements over the batch to the worst case, and collecting
them per family and depth."""

import numpy as np


# How each measured column is reduced over the states: the worst case. A Lanczos bound
# `b_i` on each `v_i` bounds `max_i v_i` and `min_i v_i` by `max_i b_i`.
_WORST = {
    "sigma_max": np.max,
    "sigma_min": np.min,
    "cond": np.max,
    "jac_rel_err": np.max,
    "out_rel_err": np.max,
    "sigma_max_bound": np.max,
    "sigma_min_bound": np.max,
    "jac_rel_err_bound": np.max,
    "converged": np.min,  # 1 only if every state's Lanczos values converged
}


def worst_case(point: dict[str, np.ndarray]) -> dict[str, float]:
    """The batch's worst case of every column of `point` (per-state arrays), with
    `cond = σ_max / σ_min` (inf for a non-finite Jacobian)."""
    smax, smin = point["sigma_max"], point["sigma_min"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(np.isfinite(smax), smax / smin, np.inf)
    point = {**point, "cond": cond}
    order = ["sigma_max", "sigma_min", "cond"] + [
        c for c in point if c not in ("sigma_max", "sigma_min", "cond")
    ]
    return {c: float(_WORST[c](point[c])) for c in order}


class Table:
    """Columns of values per depth, per family, in the order they were first seen."""

    def __init__(self, names):
        self.columns: dict[str, dict[str, list[float]]] = {name: {} for name in names}

    def add(self, family: str, values: dict[str, float]) -> None:
        cols = self.columns[family]
        for name, v in values.items():
            cols.setdefault(name, []).append(float(v))

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return {
            f: {c: np.asarray(v) for c, v in cols.items()}
            for f, cols in self.columns.items()
        }
