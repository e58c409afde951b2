import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._optional import require


#: Column names and how they are shown; every family has a subset of them.
COLUMN_LABELS = {
    "sigma_max": "σ_max",
    "sigma_max_bound": "± σ_max",
    "sigma_min": "σ_min",
    "sigma_min_bound": "± σ_min",
    "cond": "cond",
    "jac_rel_err": "‖J_N−J_ode‖/‖J_ode‖",
    "jac_rel_err_bound": "± ‖J_N−J_ode‖/‖J_ode‖",
    "out_rel_err": "‖y_N−y_ode‖/‖y_ode‖",
    "upper_bound": "(1+hL)^N",
    "lower_bound": "(1−hL)^N",
    "accuracy": "test acc",
}

#: Families and how they are shown (any other family by its name).
FAMILY_LABELS = {
    "euler": "Euler ResNet, h = T/N",
    "unscaled": "unscaled ResNet, h = 1",
    "plain": "plain tanh stack",
    "branch_1/N": "random branches × 1/N",
    "branch_1/sqrt(N)": "random branches × 1/√N",
    "untied smooth": "untied β = 1, smooth init, refined",
    "untied iid": "untied β = 1, iid init, refined",
    "untied interpolated": "untied β = 1, interpolated init, refined",
}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


#: Markers in the Markdown tables, and the legend line each adds under them.
UNCONVERGED, ROUNDOFF = "†", "‡"
_LEGEND = {
    UNCONVERGED: "† Lanczos did not converge to its tolerance in this row "
    "(the ± columns say by how much; raise `max_iters` of "
    "`cd.extreme_singular_values`).",
    ROUNDOFF: "‡ σ_min < eps·σ_max ({dtype}): below round-off; σ_min and cond are "
    "limited by rounding, not resolved.",
    "—": "—(inf), —(nan): a non-finite value (overflow, or a non-finite Jacobian).",
}
# The columns a Lanczos run produces (marked † when it did not converge).
_LANCZOS = ("sigma_max", "sigma_min", "cond", "jac_rel_err")


def _cell(v, mark: str = "") -> str:
    """A table cell: the value with its markers; a non-finite number as `—(inf)`."""
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return f"—({_fmt(v)})"
    return _fmt(v) + mark


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Rows of values, or of `(value, marker)` pairs."""
    pair = lambda c: c if isinstance(c, tuple) else (c, "")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(*pair(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(v) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else str(v)  # JSON has no inf/nan
    if isinstance(v, np.integer):
        return int(v)
    return v


@dataclasses.dataclass(frozen=True)
class DepthSweep:
    """The result of [`contdepth.depth_sweep`][]: per depth `N`, spectra of the
    end-to-end Jacobian `J_N = d y_N / d y_0` for every swept family, plus the
    reference model's.

    Values over a batch of states are reduced to the worst case: the largest `σ_max`,
    condition number, errors and error bounds, the smallest `σ_min`.

    **Attributes:**

    - `steps`: the depths `N`, increasing.
    - `horizon`: `T` (an Euler family uses `h = T/N`), or `None` if unknown.
    - `dim`: the state size `d`.
    - `num_states`: how many states were swept.
    - `lipschitz`: the Lipschitz bound `L` of the first family exposing one (the
        field's weight spectral norms), `inf` when unknown (shown as "n/a").
    - `families`: `{family: {column: values per N}}` in the sweep's order (the first
        family is the main one); the default families are `"euler"`, `"unscaled"`,
        `"plain"`, `"branch_1/N"`, `"branch_1/sqrt(N)"`, any other is shown by its
        name. Columns from `sigma_max`, `sigma_min`, `cond`, `jac_rel_err`,
        `out_rel_err` (compared families), `upper_bound`, `lower_bound` (families with
        a priori bounds), `sigma_max_bound`, `sigma_min_bound`, `jac_rel_err_bound`
        (matrix-free rows: Lanczos error bounds), `accuracy`.
    - `reference`: the reference model's Jacobian: `sigma_max`, `sigma_min`, `cond`,
        `num_steps` (solver steps of a Neural ODE), and extra scalars such as
        `accuracy`; empty without a reference.
    - `meta`: settings (dtype, method, tolerances, seeds) for the record.

    Matrix-free rows also carry `converged` (1 when every Lanczos value of every state
    passed its convergence test, else 0); [`contdepth.DepthSweep.flags`][] collects
    the per-row flags, which `to_markdown` marks (`†` unconverged, `‡` `σ_min` below
    round-off, `—(inf)`/`—(nan)` non-finite) and `to_json` records under `"flags"`.
    """

    steps: tuple[int, ...]
    horizon: float | None
    dim: int
    num_states: int
    lipschitz: float
    families: Mapping[str, Mapping[str, np.ndarray]]
    reference: Mapping[str, float]
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def column(self, family: str, name: str) -> np.ndarray:
        """Values of column `name` of `family`, one per `N` in `steps`."""
        if family not in self.families:
            raise KeyError(
                f"`family` must be one of {sorted(self.families)}, got {family!r}."
            )
        cols = self.families[family]
        if name not in cols:
            raise KeyError(
                f"family {family!r} has columns {sorted(cols)}, got name={name!r}."
            )
        return cols[name]

    def with_column(self, family: str, name: str, values) -> "DepthSweep":
        """A copy with one more column (e.g. test accuracy per `N`)."""
        values = np.asarray(values)
        if values.shape != (len(self.steps),):
            raise ValueError(
                f"`values` must have one entry per N, shape ({len(self.steps)},), got "
                f"{values.shape}."
            )
        families = {f: dict(c) for f, c in self.families.items()}
        families.setdefault(family, {})[name] = values
        return dataclasses.replace(self, families=families)

    def with_reference(self, **values: float) -> "DepthSweep":
        """A copy with extra scalars for the Neural-ODE reference."""
        return dataclasses.replace(self, reference={**self.reference, **values})

    def flags(self) -> dict[str, dict[str, np.ndarray]]:
        """Per family, boolean flags per `N`:

        - `unconverged`: a Lanczos value did not converge (matrix-free rows with a
            `converged` column; all `False` otherwise);
        - `roundoff`: `σ_min < eps σ_max` for the sweep's dtype, so `σ_min` (and
            `cond`) is below the resolution of floating point;
        - `non_finite`: some value of the row is inf or nan.
        """
        eps = np.finfo(np.dtype(self.meta.get("dtype", "float64"))).eps
        n = len(self.steps)
        out = {}
        for family, cols in self.families.items():
            conv = cols.get("converged")
            unconverged = np.zeros(n, bool) if conv is None else np.asarray(conv) < 1
            roundoff = np.zeros(n, bool)
            if "sigma_max" in cols and "sigma_min" in cols:
                smax = np.asarray(cols["sigma_max"], float)
                smin = np.asarray(cols["sigma_min"], float)
                with np.errstate(invalid="ignore"):
                    roundoff = (
                        np.isfinite(smax) & np.isfinite(smin) & (smin < eps * smax)
                    )
            values = [np.asarray(v, float) for v in cols.values()]
            non_finite = (
                np.any([~np.isfinite(v) for v in values], axis=0)
                if values
                else (np.zeros(n, bool))
            )
            out[family] = dict(
                unconverged=unconverged, roundoff=roundoff, non_finite=non_finite
            )
        return out

    def _marked(self, flags, family: str, column: str) -> list:
        """`(value, marker)` per `N` of one column."""
        f = flags[family]
        cells = []
        for i, v in enumerate(self.families[family][column]):
            mark = UNCONVERGED if column in _LANCZOS and f["unconverged"][i] else ""
            if column in ("sigma_min", "cond") and f["roundoff"][i]:
                mark += ROUNDOFF
            cells.append((v, mark))
        return cells

    def _legend(self, tables: str) -> list[str]:
        dtype = self.meta.get("dtype", "float64")
        used = [m for m in _LEGEND if m in tables]
        return ["", *(_LEGEND[m].format(dtype=dtype) for m in used)] if used else []

    def _header(self) -> list[str]:
        model = self.meta.get("model", "euler")
        parts = (
            []
            if model == "euler"
            else [
                f"Swept model: {model} (its ODE limit is the reference; "
                "family 'euler' holds it)",
                "",
            ]
        )
        lip = self.lipschitz if math.isfinite(self.lipschitz) else None
        growth = (
            math.exp(min(lip * self.horizon, 700.0))
            if lip is not None and self.horizon is not None
            else None
        )
        setting = (
            f"T = {_fmt(self.horizon)}, d = {self.dim}, L = {_fmt(lip)}, "
            f"exp(LT) = {_fmt(growth)}"
        )
        if self.reference:
            items = ", ".join(f"{k} = {_fmt(v)}" for k, v in self.reference.items())
            name = self.meta.get("reference") or "Neural ODE"
            name = "Neural ODE" if name == "NeuralODE" else name
            return parts + [f"{name} reference ({setting}): {items}", ""]
        return parts + [f"No reference ({setting})", ""]

    def to_markdown(self) -> str:
        """Two Markdown tables: the first family in full (against the reference), and
        `σ_max`, `σ_min` of the others; the reference on a line above them."""
        parts = self._header()
        first, *others = self.families
        if first != "euler":
            parts += [f"Family: {FAMILY_LABELS.get(first, first)}", ""]
        cols = self.families[first]
        flags = self.flags()
        order = [c for c in COLUMN_LABELS if c in cols]
        step = [] if self.horizon is None else ["h"]
        headers = ["N", *step] + [COLUMN_LABELS[c] for c in order]
        marked = [self._marked(flags, first, c) for c in order]
        rows = [
            [n]
            + ([] if self.horizon is None else [self.horizon / n])
            + [col[i] for col in marked]
            for i, n in enumerate(self.steps)
        ]
        tables = [_table(headers, rows)]
        if others:
            headers = ["N"]
            values = []
            for f in others:
                for c in ("sigma_max", "sigma_min", "jac_rel_err"):
                    if c in self.families[f]:
                        headers.append(f"{f} {COLUMN_LABELS[c]}")
                        values.append(self._marked(flags, f, c))
            rows = [[n] + [col[i] for col in values] for i, n in enumerate(self.steps)]
            tables += ["", _table(headers, rows)]
        text = "\n".join(tables)
        return "\n".join(parts + [text] + self._legend(text))

    def to_dict(self) -> dict:
        """Everything as plain Python types (inf/nan as strings)."""
        return _jsonable(
            {
                "steps": list(self.steps),
                "horizon": self.horizon,
                "dim": self.dim,
                "num_states": self.num_states,
                "lipschitz": self.lipschitz,
                "families": self.families,
                "reference": self.reference,
                "meta": self.meta,
                "flags": self.flags(),
            }
        )

    def to_json(self, path=None) -> str:
        """The result as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def plot(self, path=None, *, ax=None):
        """Singular values against `N` on log-log axes: one colour per family
        (`σ_max` solid, `σ_min` dashed), the reference's `[σ_min, σ_max]` as a
        horizontal band, the Grönwall bound `exp(LT)` dotted (when known); and a
        second panel with `‖J_N − J_ref‖ / ‖J_ref‖` of the compared families and the
        slope −1 guide.

        **Arguments:**

        - `path`: where to save the figure (PNG, SVG, PDF by extension); `None` to
            only return it.
        - `ax`: a pair of matplotlib axes to draw on instead of a new figure.

        **Returns:**

        The matplotlib `Figure`.
        """
        matplotlib = require("matplotlib", extra="plot")

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        plt = require("matplotlib.pyplot", extra="plot")

        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        else:
            fig = ax[0].figure
        self._plot_spectra(ax[0], plt.rcParams["axes.prop_cycle"].by_key()["color"])
        self._plot_errors(ax[1])
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def _label(self, family: str) -> str:
        if family == "euler" and self.meta.get("model", "euler") != "euler":
            return f"{self.meta['model']} ResNet, h = T/N"
        return FAMILY_LABELS.get(family, family)

    def _plot_spectra(self, ax0, colours) -> None:
        ns = np.asarray(self.steps)
        ref = self.reference
        if ref:
            ax0.axhspan(
                ref["sigma_min"],
                ref["sigma_max"],
                color="0.85",
                label="reference [σ_min, σ_max]",
            )
        if self.horizon is not None and math.isfinite(self.lipschitz * self.horizon):
            bound = math.exp(min(self.lipschitz * self.horizon, 700.0))
            ax0.axhline(bound, color="0.4", ls=":", lw=1, label="Grönwall exp(LT)")
        floor = 1e-16  # draw vanishing singular values at the floor, marked "v"
        for i, (fam, cols) in enumerate(self.families.items()):
            if "sigma_max" not in cols:
                continue
            c = colours[i % len(colours)]
            for name, style in (("sigma_max", "-o"), ("sigma_min", "--s")):
                v = np.asarray(cols[name], dtype=float)
                ax0.plot(
                    ns,
                    np.clip(v, floor, None),
                    style,
                    color=c,
                    ms=3,
                    label=self._label(fam) if name == "sigma_max" else None,
                )
                low = v < floor
                if low.any():
                    ax0.plot(ns[low], np.full(low.sum(), floor), "v", color=c, ms=7)
        ax0.plot([], [], "k-", label="σ_max")
        ax0.plot([], [], "k--", label="σ_min (▼ below 1e-16)")
        ax0.set_xscale("log", base=2)
        ax0.set_yscale("log")
        ax0.set_ylim(bottom=floor / 4)
        ax0.set_xlabel("depth N")
        ax0.set_ylabel("singular value of dy_N/dy_0")
        title = "Spectrum vs depth"
        if self.horizon is not None:
            title += f" (T = {self.horizon:g} for the Euler family)"
        ax0.set_title(title)
        ax0.legend(fontsize=7, loc="lower left")

    def _plot_errors(self, ax1) -> None:
        ns = np.asarray(self.steps)
        compared = [f for f, cols in self.families.items() if "jac_rel_err" in cols]
        for fam in compared:
            cols = self.families[fam]
            ax1.loglog(
                ns,
                cols["jac_rel_err"],
                "-o",
                ms=3,
                base=2,
                label=f"{fam}: ‖J_N − J_ref‖ / ‖J_ref‖",
            )
            if "out_rel_err" in cols:
                ax1.loglog(
                    ns,
                    cols["out_rel_err"],
                    "-s",
                    ms=3,
                    base=2,
                    label=f"{fam}: ‖y_N − y_ref‖ / ‖y_ref‖",
                )
        if compared:
            err = np.asarray(self.families[compared[0]]["jac_rel_err"], dtype=float)
            ok = err > 0
            if ok.any():
                n0, e0 = ns[ok][0], err[ok][0]
                ax1.loglog(ns, e0 * n0 / ns, "k:", lw=1, base=2, label="slope −1")
            ax1.set_xlabel("depth N")
            ax1.set_title("Families → reference")
            ax1.legend(fontsize=8)
