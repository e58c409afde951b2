"""Workload 6: compile time vs depth.

The forward+gradient of an `EulerResNet` (batch 16, dim 16, MLP width 64, 2 hidden
tanh layers) is lowered and compiled (`jax.jit(f).lower(...).compile()`) for depths
N = 16 ... 4096: `EulerResNet` runs its steps in one `lax.scan`, so the program does
not grow with N; the `Python-unrolled` baseline writes the N steps out as a Python
loop, so the program (and compile time) grows linearly and it is only compiled up
to a cap.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import contdepth as cd

from . import _common as c


DEPTHS = (16, 64, 256, 1024, 4096)
UNROLLED_DEPTHS = (16, 64, 256)
QUICK_DEPTHS = (16, 64)
QUICK_UNROLLED = (16,)


def _unrolled(model, ys):
    def one(y):
        for k in range(model.num_steps):
            y = model.step(jnp.asarray(k), y)
        return y

    return jax.vmap(one)(ys)


def _scan(model, ys):
    return jax.vmap(model)(ys)


def _compile_seconds(fwd, model, ys, repeats) -> list[float]:
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, y):
        return jnp.mean(fwd(eqx.combine(p, static), y) ** 2)

    out = []
    for _ in range(repeats):
        fn = jax.jit(jax.value_and_grad(loss))  # a fresh function: no cache hit
        t0 = time.perf_counter()
        fn.lower(params, ys).compile()
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool = False) -> dict:
    depths = QUICK_DEPTHS if quick else DEPTHS
    unrolled = QUICK_UNROLLED if quick else UNROLLED_DEPTHS
    repeats = 1 if quick else 5
    kf, ky = jr.split(jr.PRNGKey(40))
    field = cd.MLPField(16, 64, 2, key=kf)
    ys = jr.normal(ky, (16, 16), jnp.float32)
    rows, checks = [], []
    m16 = cd.EulerResNet(field, depths[0], 1.0)
    checks.append(c.check_close("unrolled vs scan forward (N=16)",
                                jax.jit(lambda y: _unrolled(m16, y))(ys), _scan(m16, ys),
                                rtol=1e-5, atol=1e-6))
    base = {}
    for impl, fwd, ns in (("EulerResNet (lax.scan)", _scan, depths),
                          ("Python-unrolled loop", _unrolled, unrolled)):
        for n in ns:
            model = cd.EulerResNet(field, n, 1.0)
            t = c.stats(_compile_seconds(fwd, model, ys, 1 if impl.startswith("Python") and n > 64
                                         else repeats))
            base.setdefault(impl, t["median_ms"])
            rows.append(c.rounded({"impl": impl, "N": n,
                                   "compile_s (median)": t["median_ms"] / 1e3,
                                   "min_s": t["min_ms"] / 1e3, "max_s": t["max_ms"] / 1e3,
                                   "runs": t["runs"],
                                   f"vs N={depths[0]}": t["median_ms"] / base[impl]}))
    notes = [
        f"compile = lower + XLA compile of value_and_grad; the unrolled loop is compiled only "
        f"up to N={unrolled[-1]} (its compile time grows linearly; one run for N > 64)",
    ]
    return {"name": "compile", "rows": rows, "notes": notes, "checks": checks}
