"""Shared helpers of the benchmark suite: timing, devices, versions, torch, checks.

Timing rules (all workloads): every callable is run once to warm up (compile, caches,
allocator), then timed `reps` times; candidates that are compared with each other are
timed *interleaved* (round-robin: A, B, C, A, B, C, ...), so that load from other
processes hits all of them alike. JAX results are synchronised with
`jax.block_until_ready`, PyTorch results with `torch.cuda.synchronize()` on GPU (CPU
PyTorch is synchronous). Reported: median, min and max in milliseconds, and the
warm-up (first) call: `first_ms`, and `compile_ms = first_ms - median_ms` (for JAX the
trace + XLA compile, for PyTorch eager its first-call overhead). The first call of a
callable made with `jax_call` / `torch_call` is timed whenever it happens (usually in
the correctness check before timing), so `compile_ms` is the real compile even when the
check, not `time_interleaved`, compiled it.

Precision rules (all workloads): float32 matmuls run at a *declared* precision, pinned
on both sides by `matmul_precision(name)`: `"fp32"` (full IEEE float32 products, JAX
`highest`, PyTorch TF32 off) or `"tf32"` (the accelerator's reduced-precision float32
default: JAX's TF32 on GPU / bf16 passes on TPU, PyTorch `allow_tf32`). JAX's default
on GPU/TPU is the reduced one, PyTorch's on GPU is full FP32, so unpinned comparisons
would not compare the same math. Every row carries its `precision`; correctness
tolerances depend on it (`tolerance`).
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


# --------------------------------------------------------------------------- precision

PRECISIONS = ("fp32", "tf32")
_PRECISION_OVERRIDE: list[tuple[str, ...]] = []
_CURRENT_PRECISION: list[str] = []


def set_precisions(names) -> None:
    """Override `precisions()` (the `--precision` flag); `None` restores the default."""
    _PRECISION_OVERRIDE.clear()
    if names:
        unknown = [n for n in names if n not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown}; choose from {PRECISIONS}")
        _PRECISION_OVERRIDE.append(tuple(dict.fromkeys(names)))


def precisions() -> tuple[str, ...]:
    """The precisions every float32 comparison runs at: `("fp32",)` on CPU (XLA:CPU and
    PyTorch CPU have no TF32: both settings compute the same full-FP32 products), and
    `("fp32", "tf32")` on GPU/TPU, where JAX's default float32 matmul is TF32 (GPU) or
    bf16 passes (TPU) while PyTorch's default on GPU is full FP32."""
    if _PRECISION_OVERRIDE:
        return _PRECISION_OVERRIDE[0]
    return ("fp32",) if jax.default_backend() == "cpu" else PRECISIONS


def current_precision() -> str:
    """The precision of the innermost `matmul_precision` block (`"fp32"` outside any)."""
    return _CURRENT_PRECISION[-1] if _CURRENT_PRECISION else "fp32"


def jax_matmul_precision(name: str) -> str:
    """The `jax.default_matmul_precision` value used for a precision name."""
    if name == "fp32":
        return "highest"
    # JAX's own reduced default: TF32 on GPU ("tensorfloat32" = HIGH there, i.e. TF32),
    # one bf16 pass on TPU ("default"); CPU ignores it (always full FP32).
    return "tensorfloat32" if jax.default_backend() == "gpu" else "default"


def precision_settings(name: str) -> dict:
    """What `matmul_precision(name)` sets, as recorded in the JSON."""
    tf32 = name == "tf32"
    return {
        "jax.default_matmul_precision": jax_matmul_precision(name),
        "torch.backends.cuda.matmul.allow_tf32": tf32,
        "torch.backends.cudnn.allow_tf32": tf32,
        "torch.set_float32_matmul_precision": "high" if tf32 else "highest",
        "effective_on_this_backend": (
            "full FP32 (no TF32 on CPU)" if jax.default_backend() == "cpu" or not tf32
            else "reduced-precision float32 matmuls (TF32 / bf16 passes)"),
    }


@contextlib.contextmanager
def matmul_precision(name: str):
    """Pin the float32 matmul precision of JAX *and* PyTorch for the block.

    `"fp32"`: `jax.default_matmul_precision("highest")`, PyTorch `allow_tf32 = False`
    (cuBLAS and cuDNN) and `set_float32_matmul_precision("highest")`. `"tf32"`: JAX's
    reduced default (`"tensorfloat32"` on GPU, `"default"` elsewhere), PyTorch
    `allow_tf32 = True` and `set_float32_matmul_precision("high")`. The previous
    settings are restored afterwards.

    `jax.default_matmul_precision` is part of the jit cache key (jax 0.10.2, checked with
    a tracing counter: switching the value retraces and recompiles every `jax.jit` /
    `eqx.filter_jit` function, switching back hits the cache again), so a function
    compiled in one block is never silently reused in a block of the other precision;
    call and time a function inside the same block (as every workload does).
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose from {PRECISIONS}")
    settings = precision_settings(name)
    torch = torch_or_none()
    saved = None
    if torch is not None:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                 torch.get_float32_matmul_precision())
        tf32 = name == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision(settings["torch.set_float32_matmul_precision"])
    _CURRENT_PRECISION.append(name)
    try:
        with jax.default_matmul_precision(settings["jax.default_matmul_precision"]):
            yield name
    finally:
        _CURRENT_PRECISION.pop()
        if saved is not None:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[:2]
            torch.set_float32_matmul_precision(saved[2])


# Under TF32 every float32 matmul rounds its inputs to a 10-bit mantissa (unit roundoff
# u = 2^-11 ~ 4.9e-4; bf16 passes on TPU are comparable), so a length-K dot product is
# off by ~u * sqrt(K) * (size of its terms): relative to the *scale* of the output, not
# to each entry (entries near zero get the same absolute error). Measured on a GPU: a
# 2048^2 matmul of normals differed from NumPy float64 by 7e-2 of a largest entry of
# 249 (3e-4 of the scale). Compositions (N Euler steps, fwd- vs rev-mode Jacobians,
# adaptive step control, Lanczos iterations) accumulate a few such errors;
# 2e-2 (~40 u) both as elementwise rtol and as a fraction of the reference's largest
# entry leaves that headroom, while a wrong result (missing term, wrong transpose,
# wrong weights) is an O(1) error and still fails.
TF32_RTOL = 2e-2
TF32_ATOL_FRACTION_OF_SCALE = 2e-2


def tolerance(precision: str, rtol: float, atol: float, scale: float = 0.0) -> tuple[float, float]:
    """`(rtol, atol)` for a comparison at `precision`. `rtol`, `atol` are the fp32
    tolerances (returned unchanged for `"fp32"`); for `"tf32"` they are loosened to
    `rtol >= 2e-2` and `atol >= 2e-2 * scale` (`scale`: the reference's largest
    magnitude), see `TF32_RTOL`."""
    if precision == "fp32":
        return rtol, atol
    if precision == "tf32":
        return max(rtol, TF32_RTOL), max(atol, TF32_ATOL_FRACTION_OF_SCALE * scale)
    raise ValueError(f"unknown precision {precision!r}")


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


class Call:
    """A zero-argument callable (`jax_call`, `torch_call`) that times its own first
    invocation (`first_s`), whoever makes it: the correctness check or the warm-up."""

    def __init__(self, run: Callable[[], object]):
        self._run = run
        self.first_s: float | None = None

    def __call__(self):
        if self.first_s is not None:
            return self._run()
        t0 = time.perf_counter()
        out = self._run()
        self.first_s = time.perf_counter() - t0
        return out


def jax_call(fn: Callable, *args) -> Call:
    """A zero-argument callable that runs `fn(*args)` and waits for the result."""
    return Call(lambda: jax.block_until_ready(fn(*args)))


def torch_call(fn: Callable, *args) -> Call:
    def call():
        out = fn(*args)
        torch_sync()
        return out

    return Call(call)


def stats(seconds: list[float], first: float | None = None) -> dict:
    """Median, min, max (ms) of timed runs; with the warm-up call's time `first` (s),
    also `first_ms` and `compile_ms = first_ms - median_ms`."""
    ms = [s * 1e3 for s in seconds]
    out = {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "runs": len(ms),
    }
    if first is not None:
        out["first_ms"] = first * 1e3
        out["compile_ms"] = first * 1e3 - out["median_ms"]
    return out


def time_interleaved(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, dict]:
    """Warm up every callable once (unless a `Call` already ran), then time them
    round-robin `reps` times each. Every entry has `first_ms` (the first call: compile
    and warm-up) and `compile_ms = first_ms - median_ms`."""
    first = {}
    for name, call in calls.items():
        prior = getattr(call, "first_s", None)
        first[name] = prior if prior is not None else _seconds(call)
    samples = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(_seconds(call))
    return {name: stats(s, first[name]) for name, s in samples.items()}


# --------------------------------------------------------------------------- checks


def check_close(what: str, ours, theirs, *, rtol: float, atol: float) -> dict:
    """Assert that two results agree before anything is timed; returns the record.

    `rtol`, `atol` are the fp32 tolerances; inside a `matmul_precision("tf32")` block
    they are loosened by `tolerance` (the record keeps the precision, the tolerances
    applied and the fp32 ones)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    precision = current_precision()
    fp32_tol = (rtol, atol)
    rtol, atol = tolerance(precision, rtol, atol, scale)
    ok = bool(np.allclose(a, b, rtol=rtol, atol=atol))
    record = {
        "what": what,
        "precision": precision,
        "max_abs_err": err,
        "max_abs_ref": scale,
        "rtol": rtol,
        "atol": atol,
        "fp32_rtol": fp32_tol[0],
        "fp32_atol": fp32_tol[1],
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


# The machine peak (workload 9) is measured once per process and precision and
# shared, so that every workload can report its fraction of the peak *at its own
# precision* (a TF32 matmul is faster than an FP32 one).
_PEAK: dict = {}


def set_peak(gflops: float, precision: str | None = None) -> None:
    _PEAK[precision or current_precision()] = gflops


def peak_gflops(precision: str | None = None) -> float | None:
    precision = precision or current_precision()
    if precision not in _PEAK:
        from . import peak

        with matmul_precision(precision):
            peak.run(quick=True)
    return _PEAK.get(precision)


def peak_gflops_by_precision() -> dict:
    return dict(_PEAK)


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


def peak_gflops_known(precision: str | None = None) -> bool:
    return (precision or current_precision()) in _PEAK


def skipped_checks(notes: list[str]) -> list[dict]:
    """The comparisons a workload could not check because their other side is not
    installed: one record per missing package, `{"requires", "reason"}`, so that a
    missing check is excused only by an explicit, verifiable entry in the JSON."""
    missing = {"torch": TORCH_MISSING, "torchdiffeq": TORCHDIFFEQ_MISSING}
    return [{"requires": pkg, "reason": note} for pkg, note in missing.items()
            if note in notes]
