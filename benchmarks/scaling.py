"""Scaling over devices: training throughput and depth-sweep time on 1, 2, 4, 8 devices.

Each device count runs in a fresh subprocess, because the number of forced host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`) must be set before JAX starts.
On a GPU/TPU machine the real devices are used instead (up to the number available).

    python benchmarks/scaling.py [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def _worker(num_devices: int, quick: bool, part: str) -> dict:
    import jax
    import jax.random as jr
    import numpy as np
    import optax

    import contdepth as cd

    platform = jax.devices()[0].platform
    mesh = cd.make_mesh(num_devices)
    train_data, _ = cd.datasets.digits()
    batch = 256
    steps = 30 if quick else 200
    model = cd.make_classifier(
        "euler", num_features=64, num_classes=10, dim=64, depth=16, key=jr.PRNGKey(0)
    )
    if part == "sweep":
        return _sweep_worker(mesh, quick)
    kwargs = dict(batch_size=batch, key=jr.PRNGKey(1), optimizer=optax.adam(1e-3),
                  progress=False, mesh=mesh)
    t0 = time.perf_counter()
    cd.train(model, train_data, steps=2, **kwargs)  # compile
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, hist = cd.train(model, train_data, steps=steps, **kwargs)
    train_s = time.perf_counter() - t0
    return {
        "devices": num_devices,
        "platform": platform,
        "batch": batch,
        "train_steps": steps,
        "train_samples_per_s": steps * batch / train_s,
        # the 2-step warm-up call less 2 timed steps: trace + compile
        "train_compile_ms": 1e3 * (warmup_s - 2 * train_s / steps),
        "final_loss": float(np.asarray(hist["loss"])[-1]),
    }


def _sweep_worker(mesh, quick: bool) -> dict:
    import jax.random as jr

    import contdepth as cd

    field = cd.MLPField(64, 64, 1, key=jr.PRNGKey(2))
    ys = jr.normal(jr.PRNGKey(3), (16, 64))
    sweep_steps = (8, 64) if quick else (8, 64, 512)
    t0 = time.perf_counter()
    cd.depth_sweep(field, ys, horizon=1.0, steps=sweep_steps, batched=True,
                   baselines=False, progress=False, mesh=mesh)  # compile
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cd.depth_sweep(field, ys, horizon=1.0, steps=sweep_steps, batched=True,
                   baselines=False, progress=False, mesh=mesh)
    sweep_s = time.perf_counter() - t0
    return {
        "sweep_states": 16,
        "sweep_steps": list(sweep_steps),
        "sweep_seconds": sweep_s,
        "sweep_compile_ms": 1e3 * (warmup_s - sweep_s),  # same work, first call - second
    }


def run(quick: bool = False) -> dict:
    """Run every device count in its own subprocess; rows with throughput ratios."""
    from tqdm.auto import tqdm

    counts = (1, 2, 4) if quick else (1, 2, 4, 8)
    rows, notes = [], []
    for n in tqdm(counts, desc="scaling", leave=False):
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
        # Full FP32 matmuls in the workers too (as `_common.matmul_precision("fp32")`).
        env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
        row = {"precision": "fp32"}
        for part in ("train", "sweep"):  # separate processes: see tests/_distributed_worker.py
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), part]
            if quick:
                cmd.append("--quick")
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      timeout=300)
            except subprocess.TimeoutExpired:
                notes.append(f"{n} devices, {part}: no result within 300 s (stalled)")
                continue
            if proc.returncode != 0:
                notes.append(f"{n} devices, {part} failed: "
                             f"{proc.stderr.strip().splitlines()[-1:]}")
                continue
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        if len(row) > 1:
            row.setdefault("devices", n)
            rows.append(row)
    base = rows[0] if rows and rows[0].get("devices") == 1 else {}
    for r in rows:
        if "train_samples_per_s" in r and "train_samples_per_s" in base:
            r["train_speedup"] = r["train_samples_per_s"] / base["train_samples_per_s"]
        if "sweep_seconds" in r and "sweep_seconds" in base:
            r["sweep_speedup"] = base["sweep_seconds"] / r["sweep_seconds"]
    cores = os.cpu_count()
    notes.append(
        f"Forced host devices share this machine's {cores} CPU cores: the rows check that "
        "sharded runs work and measure their overhead; real speed-ups need real devices."
    )
    notes.append("train_compile_ms: the 2-step warm-up call less 2 timed steps; "
                 "sweep_compile_ms: the first depth sweep less the second (same work). "
                 "Workers run with JAX_DEFAULT_MATMUL_PRECISION=highest (fp32).")
    return {"name": "scaling", "rows": rows, "notes": notes}


def _table(rows) -> str:
    cols = ["devices", "train_samples_per_s", "train_speedup", "sweep_seconds", "sweep_speedup"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "—"))
            for c in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("part", nargs="?", default="train", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker is not None:
        print(json.dumps(_worker(a.worker, a.quick, a.part)))
        sys.exit(0)
    result = run(a.quick)
    print(_table(result["rows"]))
    for note in result["notes"]:
        print("note:", note)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "scaling.json"), "w") as f:
        json.dump(result, f, indent=2)
