"""Run the contdepth benchmark suite.

    python -m benchmarks                    # full suite (the figures quoted in the README)
    python -m benchmarks --quick            # CI-sized smoke run
    python -m benchmarks --only euler peak  # some workloads
    python -m benchmarks --skip memory      # all but some
    python -m benchmarks --out DIR          # where the JSON goes (default benchmarks/results)

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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CI-sized run")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=WORKLOADS,
                        help=f"run only these workloads ({', '.join(WORKLOADS)})")
    parser.add_argument("--skip", nargs="+", metavar="NAME", choices=WORKLOADS, default=(),
                        help="leave these workloads out")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results",
                        help="output directory for the JSON (default: benchmarks/results)")
    args = parser.parse_args(argv)

    from . import _common as c

    names = [w for w in WORKLOADS
             if (args.only is None or w in args.only) and w not in args.skip]
    args.out.mkdir(parents=True, exist_ok=True)
    env = c.environment()
    summary = {"quick": args.quick, "environment": env, "workloads": {}}
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
                result = module.run(quick=args.quick)
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
        if c.peak_gflops_known():
            result["peak_gflops"] = c.peak_gflops()
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        summary["workloads"][name] = {
            "seconds": result["seconds"],
            "rows": len(result["rows"]),
            "checks": len(result["checks"]),
            "checks_passed": all(ch.get("passed", False) for ch in result["checks"]),
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
    tqdm.write(to_markdown([{"target": t["target"], "measured": t["measured"],
                             "met?": {True: "yes", False: "NO", None: "n/a"}[t["met"]]}
                            for t in summary["targets"]]), file=sys.stdout)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    summary["peak_gflops"] = c.peak_gflops() if c.peak_gflops_known() else None
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {len(names)} workload(s) + summary.json to {args.out} "
          f"in {summary['seconds']:.0f} s")
    if failures:
        print(f"FAILED workloads: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
