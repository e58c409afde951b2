"""Workload 5: top-k singular values of a large network Jacobian.

An Euler ResNet (`N = 16` steps) on a 1024-dimensional MLP field (1 hidden tanh layer
of width 256), float32, one state; the 5 largest singular values of `d y_N / d y_0`:

- `matrix-free`: `cd.extreme_singular_values(model, y, 5, which="largest")`
  (Golub-Kahan-Lanczos; one jvp + one vjp per iteration, default iteration count);
- `dense`: `cd.singular_values(model, y)` (materialise the 1024 x 1024 Jacobian with
  `jax.jacfwd`, then a full SVD).

The matrix-free values are checked against the dense ones before timing.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

import contdepth as cd

from . import _common as c


FULL = dict(dim=1024, width=256, num_steps=16, k=5)
QUICK = dict(dim=64, width=32, num_steps=4, k=3)
PRECISION_SWEEP = True  # run once per precision of `_common.precisions()`


def run(quick: bool = False) -> dict:
    cfg = QUICK if quick else FULL
    d, w, n, k = cfg["dim"], cfg["width"], cfg["num_steps"], cfg["k"]
    kf, ky, kl = jr.split(jr.PRNGKey(30), 3)
    field = cd.MLPField(d, w, 1, key=kf)
    model = cd.EulerResNet(field, n, 1.0)
    y = jr.normal(ky, (d,), jnp.float32)

    @eqx.filter_jit
    def matrix_free(m, y):
        res = cd.extreme_singular_values(m, y, k, key=kl, which="largest")
        return res.largest, res.largest_bound

    @eqx.filter_jit
    def dense(m, y):
        return cd.singular_values(m, y)[:k]

    calls = {"matrix-free (Lanczos)": c.jax_call(matrix_free, model, y),
             "dense (jacfwd + SVD)": c.jax_call(dense, model, y)}
    top, bound = calls["matrix-free (Lanczos)"]()  # first calls: the compiles
    ref = calls["dense (jacfwd + SVD)"]()
    checks = [c.check_close(f"top-{k} singular values: matrix-free vs dense SVD", top, ref,
                            rtol=1e-3, atol=1e-4)]
    timings = c.time_interleaved(calls, c.reps(quick))
    base = timings["matrix-free (Lanczos)"]["median_ms"]
    rows = [
        c.rounded({"impl": name, "dim": d, "k": k, "N": n, **t,
                   "dense / this": timings["dense (jacfwd + SVD)"]["median_ms"] / t["median_ms"],
                   "vs matrix-free (x slower)": t["median_ms"] / base})
        for name, t in timings.items()
    ]
    notes = [
        f"top-{k}: {[round(float(v), 5) for v in top]}, a-posteriori bounds "
        f"{[float(f'{float(v):.2g}') for v in bound]}",
    ]
    return {"name": "spectra", "rows": rows, "notes": notes, "checks": checks}
