"""The benchmark suite runs end to end (`python -m benchmarks --quick`), so it never
rots. No timing is asserted: only that every workload ran, wrote its JSON, and that
its correctness checks (outputs agreeing across implementations) ran and passed; that
every row declares its matmul precision and every timed row its compile time; and (a
second, euler-only run) that `--precision fp32 tf32` runs and checks both."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest


# About a minute on 2 shared cores (mostly XLA compiles of ~20 programs).
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# `memory` belongs to the suite but compiles dozens of gradients even when quick
# (minutes on 2 cores); `benchmarks/memory.py` is exercised by its own module.
SKIPPED = ("memory", "scaling")  # covered by test_reversible / test_distributed
EXPECTED = ("peak", "euler", "adaptive", "jacobian", "spectra", "compile", "training")
# Workloads whose every row compares implementations that must agree first.
MUST_CHECK = EXPECTED


def _run_quick(out, *args):
    env = dict(os.environ)
    # Correctness only: cheap XLA compiles keep the smoke run short; x64 off as in use.
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    env["JAX_ENABLE_X64"] = "0"
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return _run_quick(tmp_path_factory.mktemp("bench"), "--skip", *SKIPPED)


@pytest.fixture(scope="module")
def both_precisions_run(tmp_path_factory):
    # ~10 s: euler alone (its peak reference is measured lazily, per precision).
    return _run_quick(tmp_path_factory.mktemp("bench_prec"), "--only", "euler",
                      "--precision", "fp32", "tf32")


def test_every_workload_wrote_json(quick_run):
    out, _ = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True
    assert set(summary["workloads"]) == set(EXPECTED)
    assert summary["peak_gflops"] > 0
    env = summary["environment"]
    assert env["jax"] and env["jax_backend"]
    for name in EXPECTED:
        result = json.loads((out / f"{name}.json").read_text())
        assert result["name"] == name
        assert "error" not in result, result.get("traceback")
        assert result["rows"], f"{name} produced no rows"
        for row in result["rows"]:
            if "median_ms" in row:
                assert row["runs"] >= 3
                assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]


def test_correctness_checks_ran_and_passed(quick_run):
    out, _ = quick_run
    for name in MUST_CHECK:
        result = json.loads((out / f"{name}.json").read_text())
        checks = result["checks"]
        # A workload without checks is excused only by an explicit `skipped_checks`
        # record whose comparison side is genuinely not installed here.
        skipped = result.get("skipped_checks", [])
        for record in skipped:
            assert record["reason"], record
            assert importlib.util.find_spec(record["requires"]) is None, (
                f"{name}: check skipped for {record['requires']}, which is installed")
        assert checks or skipped, f"{name}: no correctness check ran"
        for check in checks:
            assert check["passed"], check
            assert check["max_abs_err"] <= check["atol"] + check["rtol"] * check["max_abs_ref"]


def test_torch_rows_present_or_skipped_with_note(quick_run):
    out, _ = quick_run
    result = json.loads((out / "euler.json").read_text())
    impls = {row["impl"] for row in result["rows"]}
    try:
        import torch  # noqa: F401

        assert "torch eager loop" in impls
    except ImportError:
        assert "torch eager loop" not in impls
        assert any("torch not installed" in note for note in result["notes"])


def test_markdown_table_printed(quick_run):
    _, stdout = quick_run
    for name in EXPECTED:
        assert f"## {name}" in stdout
    assert "| impl |" in stdout or "| case |" in stdout


def test_every_row_declares_its_precision(quick_run):
    out, stdout = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert "fp32" in summary["precisions"]
    assert summary["precisions"]["fp32"]["jax.default_matmul_precision"] == "highest"
    for name in EXPECTED:
        result = json.loads((out / f"{name}.json").read_text())
        assert result["precisions"], name
        for row in result["rows"]:
            assert row["precision"] in result["precisions"], (name, row)
        for check in result["checks"]:
            assert check["precision"] in result["precisions"], (name, check)
    assert "| precision |" in stdout
    assert all(t["precision"] in ("fp32", "tf32") for t in summary["targets"])


def test_every_timed_workload_records_compile_times(quick_run):
    out, _ = quick_run
    timed = 0
    for name in EXPECTED:
        result = json.loads((out / f"{name}.json").read_text())
        rows = [row for row in result["rows"] if "median_ms" in row]
        if not rows:  # `compile` reports compile times as its rows
            continue
        timed += 1
        for row in rows:
            assert row["compile_ms"] == pytest.approx(row["first_ms"] - row["median_ms"],
                                                      rel=1e-2, abs=1e-2), (name, row)
        # Every workload times at least one JAX program: its first call compiles.
        assert max(row["compile_ms"] for row in rows) > 0, name
        assert result["compile_ms"], name
        assert sum(len(v) for v in result["compile_ms"].values()) == len(rows), name
    assert timed >= 5


def test_forced_precisions_both_run_and_pass(both_precisions_run):
    out, stdout = both_precisions_run
    result = json.loads((out / "euler.json").read_text())
    assert result["precisions"] == ["fp32", "tf32"]
    by_precision = {}
    for row in result["rows"]:
        key = (row["case"], row["what"], row["impl"])
        by_precision.setdefault(row["precision"], set()).add(key)
    assert set(by_precision) == {"fp32", "tf32"}
    assert by_precision["fp32"] == by_precision["tf32"]  # the same rows at each precision
    checks = {p: [ch for ch in result["checks"] if ch["precision"] == p]
              for p in ("fp32", "tf32")}
    for p, records in checks.items():
        assert records, f"no {p} checks"
        assert all(ch["passed"] for ch in records), records
    # tf32 tolerances are never tighter than the fp32 ones they loosen
    for ch in checks["tf32"]:
        assert ch["rtol"] >= ch["fp32_rtol"] and ch["atol"] >= ch["fp32_atol"]
    assert set(result["compile_ms"]) == {"fp32", "tf32"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["precisions"]) == {"fp32", "tf32"}
    assert set(summary["peak_gflops_by_precision"]) == {"fp32", "tf32"}
    if summary["environment"]["jax_backend"] == "cpu":
        assert any("no TF32" in note for note in result["notes"])
