"""Workload 9, machine peak: GFLOP/s of a large float32 matmul, JAX and PyTorch.

The peak used for every "fraction of peak" in the suite is the faster of the two
(the machine's own best measured matmul rate), so fractions are never flattered.

    python -m benchmarks --only peak
"""

import jax
import numpy as np
import jax.numpy as jnp
import jax.random as jr

from . import _common as c


# Run once per precision of `_common.precisions()` (the peak of each precision is the
# reference of that precision's `frac_peak`).
PRECISION_SWEEP = True


def run(quick: bool = False) -> dict:
    n = 1024 if quick else 2048
    flops = 2.0 * n**3
    a = jr.normal(jr.PRNGKey(0), (n, n), jnp.float32)
    b = jr.normal(jr.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    calls = {"jax (XLA)": c.jax_call(matmul, a, b)}
    torch = c.torch_or_none()
    notes = []
    if torch is not None:
        c.environment()  # sets PyTorch's thread count
        ta, tb = c.to_torch(a), c.to_torch(b)
        calls["torch"] = c.torch_call(torch.matmul, ta, tb)
        check = c.check_close(
            f"matmul {n}x{n}", calls["jax (XLA)"](), calls["torch"]().cpu(), rtol=1e-3, atol=1e-3
        )
    else:
        notes.append(c.TORCH_MISSING)
        # Still check the kernel against a float64 NumPy product before timing it.
        ref = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
        check = c.check_close(
            f"matmul {n}x{n} vs NumPy float64", calls["jax (XLA)"](), ref, rtol=1e-3, atol=1e-3
        )
    timings = c.time_interleaved(calls, c.reps(quick) + 2)
    rows = []
    for impl, t in timings.items():
        rate = flops / (t["median_ms"] * 1e-3) / 1e9
        best = flops / (t["min_ms"] * 1e-3) / 1e9
        rows.append(c.rounded({"impl": impl, "n": n, **t, "GFLOP/s": rate, "GFLOP/s (best run)": best}))
    peak = max(r["GFLOP/s"] for r in rows)
    c.set_peak(peak)
    notes.append(
        f"machine peak ({c.current_precision()}) = {peak:.1f} GFLOP/s (faster median of the "
        f"two, float32 {n}x{n} matmul); every 'frac_peak' of a {c.current_precision()} row "
        "in the suite is relative to it"
    )
    return {
        "name": "peak",
        "rows": rows,
        "notes": notes,
        "checks": [check] if check else [],
        "peak_gflops": peak,
    }
