"""The matmul-layout measurement behind the README's "why the gradient was slow":
XLA:CPU runs `x @ w.T` at full speed but `x.T @ x` (a dot whose left operand is
contracted on its leading axis, the shape of every weight gradient `dW = dz^T a`) on a
slower generic path; materialising the transpose behind an `optimization_barrier` puts
it back on the fast path. Products of the weight-gradient size of the compute-bound
Euler workload (256 x 128 x 128), 100 per timed call, timed interleaved.

    python benchmarks/matmul_layout.py [--quick]    # JSON in benchmarks/results/
"""

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import jax.random as jr


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    environment, jax_call, matmul_precision, precision_settings, time_interleaved)


BATCH, WIDTH, ITERS = 256, 128, 100


def _loop(product):
    def run(x, w):
        def body(acc, _):
            # The operand depends on the carry, so XLA cannot hoist the product.
            return acc + 1e-6 * product(x + acc, w)[0, 0], None

        return jax.lax.scan(body, jnp.zeros((), x.dtype), None, length=ITERS)[0]

    return jax.jit(run)


PRODUCTS = {
    "x @ w.T": lambda x, w: x @ w.T,  # (256, 128) @ (128, 128): canonical layout
    "x.T @ x": lambda x, w: x.T @ x,  # contracts the leading (batch) axis of both
    "optimization_barrier(x.T) @ x": lambda x, w: jax.lax.optimization_barrier(x.T) @ x,
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    kx, kw = jr.split(jr.PRNGKey(0))
    x = jr.normal(kx, (BATCH, WIDTH), jnp.float32)
    w = jr.normal(kw, (WIDTH, WIDTH), jnp.float32)
    with matmul_precision("fp32"):  # full FP32 products (JAX "highest")
        calls = {name: jax_call(_loop(p), x, w) for name, p in PRODUCTS.items()}
        timings = time_interleaved(calls, 3 if args.quick else 15)
    flops = 2 * BATCH * WIDTH * WIDTH * ITERS
    rows = [{"precision": "fp32", "expr": name, **t,
             "GFLOP/s": flops / (t["median_ms"] * 1e-3) / 1e9}
            for name, t in timings.items()]
    result = {"name": "matmul_layout", "rows": rows, "environment": environment(),
              "precision": precision_settings("fp32"),
              "compile_ms": {"fp32": {row["expr"]: row["compile_ms"] for row in rows}},
              "notes": [f"{ITERS} products of a ({BATCH}, {WIDTH}) float32 operand per "
                        "call; GFLOP/s from the median of interleaved runs.",
                        "first_ms: the first call (trace + XLA compile + one run); "
                        "compile_ms = first_ms - median_ms."],
              "quick": args.quick}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "matmul_layout.json").write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        print(f"{row['expr']:32s} {row['GFLOP/s']:6.1f} GFLOP/s")
    return result


if __name__ == "__main__":
    main()
