"""Workload 6: compile time vs depth, and `cd.NeuralODE` vs plain diffrax.

The forward+gradient of an `EulerResNet` (batch 16, dim 16, MLP width 64, 2 hidden
tanh layers) is lowered and compiled (`jax.jit(f).lower(...).compile()`) for depths
N = 16 ... 4096: `EulerResNet` runs its steps in one `lax.scan`, so the program does
not grow with N; the `Python-unrolled` baseline writes the N steps out as a Python
loop, so the program (and compile time) grows linearly and it is only compiled up
to a cap.

Second table: the forward and the forward+gradient of one `cd.NeuralODE` solve
(Tsit5, PID rtol 1e-5 / atol 1e-7, state dim 16, the same field) against
`diffrax.diffeqsolve` with the same options, compiled interleaved: the price of
contdepth's checks and failure explanations at compile time (target: within 1.2x).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import diffrax
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


def _plain_diffrax(field, y):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 1.0, None, y,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7), max_steps=4096,
    ).ys[-1]


def _neural_ode(field, y):
    return cd.NeuralODE(field, 1.0, rtol=1e-5, atol=1e-7, max_steps=4096)(y)


def _ode_compile_rows(field, y, repeats: int) -> tuple[list, list]:
    checks = [c.check_close("cd.NeuralODE vs diffrax.diffeqsolve forward",
                            eqx.filter_jit(_neural_ode)(field, y),
                            eqx.filter_jit(_plain_diffrax)(field, y), rtol=1e-6, atol=1e-7)]
    params, static = eqx.partition(field, eqx.is_inexact_array)
    programs = {
        "forward": lambda solve: lambda p, y: solve(eqx.combine(p, static), y),
        "forward+gradient": lambda solve: jax.value_and_grad(
            lambda p, y: jnp.mean(solve(eqx.combine(p, static), y) ** 2)),
    }
    rows = []
    for what, make in programs.items():
        times = {"cd.NeuralODE": [], "diffrax.diffeqsolve": []}
        for _ in range(repeats):  # interleaved, fresh functions: no cache hit
            for impl, solve in (("cd.NeuralODE", _neural_ode),
                                ("diffrax.diffeqsolve", _plain_diffrax)):
                fn = jax.jit(make(solve))
                t0 = time.perf_counter()
                fn.lower(params, y).compile()
                times[impl].append(time.perf_counter() - t0)
        ref = c.stats(times["diffrax.diffeqsolve"])["median_ms"]
        for impl, seconds in times.items():
            t = c.stats(seconds)
            rows.append(c.rounded({"impl": impl, "program": what,
                                   "compile_s (median)": t["median_ms"] / 1e3,
                                   "min_s": t["min_ms"] / 1e3, "max_s": t["max_ms"] / 1e3,
                                   "runs": t["runs"], "vs diffrax": t["median_ms"] / ref}))
    return rows, checks


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
    ode_rows, ode_checks = _ode_compile_rows(field, ys[0], 1 if quick else 7)
    notes = [
        f"compile = lower + XLA compile of value_and_grad; the unrolled loop is compiled only "
        f"up to N={unrolled[-1]} (its compile time grows linearly; one run for N > 64)",
        "second table: one solve (no batch), Tsit5, PID rtol 1e-5/atol 1e-7, dim 16, "
        "MLP width 64 x 2; cd.NeuralODE and diffrax.diffeqsolve compiled interleaved",
    ]
    return {"name": "compile", "rows": rows + ode_rows, "notes": notes,
            "checks": checks + ode_checks}
