"""Shared helpers of the benchmark suite: timing, devices, versions, torch, checks.

Timing rules (all workloads): every callable is run once to warm up (compile, caches,
allocator), then timed `reps` times; candidates that are compared with each other are
timed *interleaved* (round-robin: A, B, C, A, B, C, ...), so that load from other
processes hits all of them alike. JAX results are synchronised with
`jax.block_until_ready`, PyTorch results with `torch.cuda.synchronize()` on GPU (CPU
PyTorch is synchronous). Reported: median, min and max in milliseconds.
"""

import contextlib
import functools
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np


QUICK_REPS = 3
FULL_REPS = 7


def reps(quick: bool) -> int:
    return QUICK_REPS if quick else FULL_REPS


# --------------------------------------------------------------------------- torch


@functools.cache
def torch_or_none():
    """The `torch` module, or `None` if it is not installed (its rows are skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def torchdiffeq_or_none():
    try:
        import torchdiffeq
    except ImportError:
        return None
    return torchdiffeq


TORCH_MISSING = "torch not installed: PyTorch rows skipped (pip install torch)"
TORCHDIFFEQ_MISSING = (
    "torchdiffeq not installed: torchdiffeq rows skipped (pip install torchdiffeq)"
)


def torch_device():
    torch = torch_or_none()
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def torch_sync():
    torch = torch_or_none()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def to_torch(x, requires_grad: bool = False):
    torch = torch_or_none()
    t = torch.tensor(np.asarray(x), device=torch_device())
    return t.requires_grad_(requires_grad)


@functools.cache
def torch_threads() -> dict:
    """Use PyTorch at its best intra-op thread count on this machine.

    On a CPU shared with other processes, PyTorch's OpenMP threads can wait on each
    other at every small op; measured once here on a compute-bound Euler loop, the
    faster of 1 thread and the default is kept for the whole run (and recorded).
    """
    torch = torch_or_none()
    if torch is None or torch_device() != "cpu":
        return {}
    default = torch.get_num_threads()
    w = [torch.randn(128, 64) * 0.1, torch.randn(128, 128) * 0.1, torch.randn(64, 128) * 0.1]
    y0 = torch.randn(256, 64)

    def loop():
        with torch.no_grad():
            y = y0
            for _ in range(20):
                z = torch.tanh(y @ w[0].T)
                z = torch.tanh(z @ w[1].T)
                y = y + 0.05 * (z @ w[2].T)

    timings = {}
    for n in sorted({1, default}):
        torch.set_num_threads(n)
        loop()
        timings[n] = min(_seconds(loop) for _ in range(5))
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return {
        "default_threads": default,
        "threads_used": best,
        "calibration_ms": {str(k): round(v * 1e3, 3) for k, v in timings.items()},
    }


# --------------------------------------------------------------------------- timing


def _seconds(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def jax_call(fn: Callable, *args) -> Callable[[], object]:
    """A zero-argument callable that runs `fn(*args)` and waits for the result."""
    return lambda: jax.block_until_ready(fn(*args))


def torch_call(fn: Callable, *args) -> Callable[[], object]:
    def call():
        out = fn(*args)
        torch_sync()
        return out

    return call


def stats(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "runs": len(ms),
    }


def time_interleaved(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, dict]:
    """Warm up every callable once, then time them round-robin `reps` times each."""
    for call in calls.values():
        call()
    samples = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(_seconds(call))
    return {name: stats(s) for name, s in samples.items()}


# --------------------------------------------------------------------------- checks


def check_close(what: str, ours, theirs, *, rtol: float, atol: float) -> dict:
    """Assert that two results agree before anything is timed; returns the record."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    ok = bool(np.allclose(a, b, rtol=rtol, atol=atol))
    record = {
        "what": what,
        "max_abs_err": err,
        "max_abs_ref": scale,
        "rtol": rtol,
        "atol": atol,
        "passed": ok,
    }
    if not ok:
        raise AssertionError(f"benchmark correctness check failed: {record}")
    return record


# --------------------------------------------------------------------------- machine


@functools.cache
def environment() -> dict:
    dev = jax.devices()[0]
    env = {
        "jax_backend": jax.default_backend(),
        "jax_device": str(dev.device_kind),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }
    for pkg in ("jaxlib", "equinox", "diffrax", "contdepth", "torch", "torchdiffeq"):
        try:
            env[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            env[pkg] = None
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    with contextlib.suppress(OSError, AttributeError):
        env["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    torch = torch_or_none()
    if torch is not None:
        env["torch_device"] = torch_device()
        env["torch_threads"] = torch_threads()
    return env


# The machine peak (workload 9) is measured once per process and shared, so that
# every workload can report its fraction of peak.
_PEAK: dict = {}


def set_peak(gflops: float) -> None:
    _PEAK["gflops"] = gflops


def peak_gflops() -> float | None:
    if "gflops" not in _PEAK:
        from . import peak

        peak.run(quick=True)
    return _PEAK.get("gflops")


def gflops_row(flops: float, median_ms: float, local_peak: float | None = None) -> dict:
    """Achieved GFLOP/s and fraction of the measured matmul peak: of the suite's peak
    (workload 9) and, if given, of the peak matmul timed interleaved with this very
    workload (`frac_peak (same rounds)`), which is what a shared, loaded machine can
    actually deliver while the workload runs."""
    rate = flops / (median_ms * 1e-3) / 1e9
    peak = peak_gflops()
    row = {
        "GFLOP/s": round(rate, 2),
        "frac_peak": None if not peak else round(rate / peak, 3),
    }
    if local_peak is not None:
        row["frac_peak (same rounds)"] = round(rate / local_peak, 3)
    return row


PEAK_IN_ROUNDS = "(peak matmul, same rounds)"


def peak_matmul_call(quick: bool):
    """A JAX float32 matmul to time interleaved with a workload: `(call, flops)`."""
    import jax.numpy as jnp
    import jax.random as jr

    n = 1024 if quick else 2048
    a = jr.normal(jr.PRNGKey(0), (n, n), jnp.float32)
    return jax_call(jax.jit(jnp.matmul), a, a), 2.0 * n**3


def mlp_flops(batch: int, sizes: list[int]) -> float:
    """Multiply-add FLOPs of one MLP application on a batch (matmuls only)."""
    return float(sum(2 * batch * a * b for a, b in zip(sizes[:-1], sizes[1:])))


def rounded(row: dict, digits: int = 3) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, float):
            out[k] = float(f"{v:.{digits + 1}g}") if abs(v) < 1e4 else round(v, 1)
        else:
            out[k] = v
    return out


def peak_gflops_known() -> bool:
    return "gflops" in _PEAK


def skipped_checks(notes: list[str]) -> list[dict]:
    """The comparisons a workload could not check because their other side is not
    installed: one record per missing package, `{"requires", "reason"}`, so that a
    missing check is excused only by an explicit, verifiable entry in the JSON."""
    missing = {"torch": TORCH_MISSING, "torchdiffeq": TORCHDIFFEQ_MISSING}
    return [{"requires": pkg, "reason": note} for pkg, note in missing.items()
            if note in notes]
