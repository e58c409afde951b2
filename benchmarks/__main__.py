"""Run the contdepth benchmark suite.

    python -m benchmarks                    # full suite (the figures quoted in the README)
    python -m benchmarks --quick            # CI-sized smoke run
    python -m benchmarks --only euler peak  # some workloads
    python -m benchmarks --skip memory      # all but some
    python -m benchmarks --out DIR          # where the JSON goes (default benchmarks/results)
    python -m benchmarks --precision fp32 tf32   # force the matmul precisions run

Float32 comparisons (workloads with `PRECISION_SWEEP = True`) run once per precision
of `_common.precisions()` (`fp32` on CPU; `fp32` and `tf32` on GPU/TPU), every other
workload once at `fp32`; JAX and PyTorch are pinned to the same precision
(`_common.matmul_precision`) and every row, check and target records it.

Prints one markdown table per workload and writes `<name>.json` per workload plus
`summary.json` (environment, peak, timings of the whole run) to the output directory.
Select the device with the usual mechanisms (`JAX_PLATFORMS=cpu`,
`CUDA_VISIBLE_DEVICES`, ...); PyTorch follows (`cuda` if available).
"""

import argparse
import importlib
import json
import pathlib
import sys
import time
import traceback

from tqdm.auto import tqdm


HERE = pathlib.Path(__file__).resolve().parent
# Order matters: `peak` first, so every later workload can report its fraction of peak.
WORKLOADS = (
    "peak",
    "euler",
    "adaptive",
    "jacobian",
    "spectra",
    "compile",
    "memory",
    "training",
    "scaling",
)


def _load(name: str):
    if not (HERE / f"{name}.py").exists():
        return None
    return importlib.import_module(f"benchmarks.{name}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "_(no rows)_"
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k in cols) + " |")
    return "\n".join(lines)


# Keys of a workload result that are tables (lists of row dicts): tagged by precision.
TABLE_KEYS = ("rows", "timing", "drift", "pivot")
# Columns that identify a row in `result["compile_ms"]`.
ID_KEYS = ("case", "solver", "what", "program", "model", "gradient", "expr", "impl")


def _tag(result: dict, precision: str) -> dict:
    """Every row of every table and every check record of `result` says its precision
    (first column of the printed tables)."""
    for key in TABLE_KEYS:
        table = result.get(key)
        if isinstance(table, list):
            result[key] = [{"precision": precision, **{k: v for k, v in row.items()
                                                      if k != "precision"}}
                           if isinstance(row, dict) else row for row in table]
    for check in result.get("checks", []):
        check.setdefault("precision", precision)
    return result


def _merge(runs: dict[str, dict]) -> dict:
    """One result from the per-precision results of a workload: tables and checks
    concatenated (fp32 first), notes de-duplicated, other entries from the first
    precision at the top level and all of them under `per_precision`."""
    (first, result), *rest = runs.items()
    result = dict(result)
    for _, other in rest:
        for key in (*TABLE_KEYS, "checks"):
            if isinstance(other.get(key), list):
                result[key] = result.get(key, []) + other[key]
        result["notes"] = list(dict.fromkeys(result.get("notes", []) + other.get("notes", [])))
        for key in ("error", "traceback"):
            if key in other and key not in result:
                result[key] = other[key]
    extras = {p: {k: v for k, v in r.items()
                  if k not in (*TABLE_KEYS, "checks", "notes", "name", "error", "traceback")}
              for p, r in runs.items()}
    if rest and any(extras.values()):
        result["per_precision"] = extras
    return result


def compile_times(rows: list[dict]) -> dict:
    """`{precision: {row label: compile_ms}}` of every timed row that has one (the label
    joins the row's identifying columns, e.g. `"compute-bound | forward | torch"`)."""
    out: dict = {}
    for row in rows:
        if row.get("compile_ms") is None:
            continue
        label = " | ".join(str(row[k]) for k in ID_KEYS if k in row)
        out.setdefault(row.get("precision", "fp32"), {})[label] = row["compile_ms"]
    return out


def run_workload(module, name: str, quick: bool, precisions) -> dict:
    """Run one workload at each precision (only `fp32` unless it sweeps), tagged."""
    from . import _common as c

    sweep = getattr(module, "PRECISION_SWEEP", False)
    runs = {}
    for precision in (precisions if sweep else ("fp32",)):
        with c.matmul_precision(precision):
            runs[precision] = _tag(module.run(quick=quick), precision)
    result = _merge(runs)
    result["precisions"] = list(runs)
    if "tf32" in runs and c.environment()["jax_backend"] == "cpu":
        result.setdefault("notes", []).append(
            "tf32 rows on cpu: XLA:CPU and PyTorch CPU have no TF32, so the 'tf32' rows "
            "compute exactly the same full-FP32 products as the 'fp32' rows (a second run, "
            "useful to test the machinery; the precision differs only on GPU/TPU).")
    if not sweep:
        result.setdefault("notes", []).append(
            "run at fp32 only (JAX 'highest', PyTorch TF32 off): not a float32 "
            "implementation comparison swept over precisions.")
    compile_ms = compile_times(result.get("rows", []))
    if compile_ms:
        result["compile_ms"] = compile_ms
        result.setdefault("notes", []).append(
            "first_ms: the first call of each timed callable (JAX: trace + XLA compile + one "
            "run; PyTorch eager: first-call overhead); compile_ms = first_ms - median_ms "
            "(also in `compile_ms` of the JSON, per precision and row).")
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CI-sized run")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=WORKLOADS,
                        help=f"run only these workloads ({', '.join(WORKLOADS)})")
    parser.add_argument("--skip", nargs="+", metavar="NAME", choices=WORKLOADS, default=(),
                        help="leave these workloads out")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results",
                        help="output directory for the JSON (default: benchmarks/results)")
    parser.add_argument("--precision", nargs="+", metavar="P", choices=("fp32", "tf32"),
                        help="float32 matmul precisions to run the comparisons at (default: "
                             "fp32 on CPU, fp32 and tf32 on GPU/TPU)")
    args = parser.parse_args(argv)

    from . import _common as c

    c.set_precisions(args.precision)
    precisions = c.precisions()

    names = [w for w in WORKLOADS
             if (args.only is None or w in args.only) and w not in args.skip]
    args.out.mkdir(parents=True, exist_ok=True)
    env = c.environment()
    summary = {"quick": args.quick, "environment": env, "workloads": {},
               "precisions": {p: c.precision_settings(p) for p in precisions}}
    failures, results = [], {}
    t_start = time.perf_counter()
    bar = tqdm(names, desc="benchmarks", unit="workload", file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        module = _load(name)
        t0 = time.perf_counter()
        if module is None:
            result = {"name": name, "rows": [], "skipped": True,
                      "notes": [f"benchmarks/{name}.py not present: workload skipped"]}
        else:
            try:
                result = run_workload(module, name, args.quick, precisions)
            except Exception as e:  # keep going; report at the end and exit non-zero
                failures.append(name)
                result = {"name": name, "rows": [], "error": repr(e),
                          "traceback": traceback.format_exc(), "notes": []}
        result.setdefault("checks", [])
        result.setdefault("skipped_checks", c.skipped_checks(result.get("notes", [])))
        results[name] = result
        result["seconds"] = round(time.perf_counter() - t0, 2)
        result["environment"] = env
        result["quick"] = args.quick
        if c.peak_gflops_known("fp32"):
            result["peak_gflops"] = c.peak_gflops("fp32")
            result["peak_gflops_by_precision"] = c.peak_gflops_by_precision()
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        summary["workloads"][name] = {
            "seconds": result["seconds"],
            "rows": len(result["rows"]),
            "checks": len(result["checks"]),
            "checks_passed": all(ch.get("passed", False) for ch in result["checks"]),
            "precisions": result.get("precisions", []),
            "compile_ms_total": {p: round(sum(v.values()), 1)
                                 for p, v in result.get("compile_ms", {}).items()} or None,
            "skipped": result.get("skipped", False),
            "error": result.get("error"),
        }
        tqdm.write(f"\n## {name}  ({result['seconds']:.1f} s)\n", file=sys.stdout)
        tqdm.write(to_markdown(result["rows"]), file=sys.stdout)
        for note in result.get("notes", []):
            tqdm.write(f"\n- {note}", file=sys.stdout)
        if "error" in result:
            tqdm.write(f"\n**FAILED**: {result['error']}\n{result['traceback']}", file=sys.stdout)
    from ._targets import evaluate

    summary["targets"] = evaluate(results)
    tqdm.write("\n## targets (issue 4)\n", file=sys.stdout)
    tqdm.write(to_markdown([{"precision": t["precision"], "target": t["target"],
                             "measured": t["measured"],
                             "met?": "informative" if t.get("informative")
                             else {True: "yes", False: "NO", None: "n/a"}[t["met"]]}
                            for t in summary["targets"]]), file=sys.stdout)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    summary["peak_gflops"] = c.peak_gflops("fp32") if c.peak_gflops_known("fp32") else None
    summary["peak_gflops_by_precision"] = c.peak_gflops_by_precision()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {len(names)} workload(s) + summary.json to {args.out} "
          f"in {summary['seconds']:.0f} s")
    if failures:
        print(f"FAILED workloads: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
