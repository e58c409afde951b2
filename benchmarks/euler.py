"""Workloads 1 and 2: the Euler ResNet forward and forward+gradient.

`y_{k+1} = y_k + h F(y_k)`, `F` an MLP with 2 hidden tanh layers, `N = 100` steps,
`T = 1`, float32, loss = mean square of the output; gradient w.r.t. all parameters.

- overhead-bound: batch 16, dim 16, width 64;
- compute-bound: batch 256, dim 64, width 128.

Implementations (same float32 weights everywhere):

- `contdepth fast path`: `batched_apply(model, ys)`, the fused batched Euler-MLP
  with its hand-written exact VJP (contdepth/_fastpath);
- `contdepth vmap`: `jax.vmap(model)` with plain `jax.grad` (the generic path);
- `diffrax Euler`: `diffrax.diffeqsolve(ODETerm(field), Euler(), dt0=1/N)` under
  `jax.vmap`, default adjoint (`RecursiveCheckpointAdjoint`): the JAX user's
  alternative;
- `torch eager loop`: a Python loop of `y = y + h * F(y)`;
- `torchdiffeq euler`: `torchdiffeq.odeint(F, y0, [0, T], method="euler",
  options={"step_size": 1/N})`.

Ratios are `time(impl) / time(contdepth fast path)`: > 1 means contdepth is faster.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import contdepth as cd
from contdepth._fastpath.batched import batched_apply

from . import _common as c


SIZES = {
    "overhead-bound": dict(batch=16, dim=16, width=64),
    "compute-bound": dict(batch=256, dim=64, width=128),
}
QUICK_SIZES = {"overhead-bound": dict(batch=8, dim=8, width=16)}
DEPTH, QUICK_DEPTH, HORIZON = 100, 10, 1.0
FAST = "contdepth fast path"
PRECISION_SWEEP = True  # run once per precision of `_common.precisions()`


def _jax_impls(model, field, num_steps, quick):
    def fwd_fast(m, ys):
        return batched_apply(m, ys)

    def fwd_vmap(m, ys):
        return jax.vmap(m)(ys)

    def fwd_diffrax(f, ys):
        def solve(y):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(f), diffrax.Euler(), 0.0, HORIZON, HORIZON / num_steps, y,
                max_steps=num_steps,
            )
            return sol.ys[-1]

        return jax.vmap(solve)(ys)

    def value_and_grad(fwd):
        def loss(m, ys):
            return jnp.mean(fwd(m, ys) ** 2)

        return eqx.filter_jit(eqx.filter_value_and_grad(loss))

    impls = {
        FAST: (model, eqx.filter_jit(fwd_fast), value_and_grad(fwd_fast)),
        "contdepth vmap": (model, eqx.filter_jit(fwd_vmap), value_and_grad(fwd_vmap)),
        "diffrax Euler": (field, eqx.filter_jit(fwd_diffrax), value_and_grad(fwd_diffrax)),
    }
    if quick:  # diffrax's gradient is a slow compile; the CI smoke run skips it
        del impls["diffrax Euler"]
    return impls


def _field_grad(obj_grad):
    return obj_grad.field if isinstance(obj_grad, cd.EulerResNet) else obj_grad


def _case(label, size, num_steps, quick, key):
    torch = c.torch_or_none()
    tde = c.torchdiffeq_or_none()
    b, d, w = size["batch"], size["dim"], size["width"]
    kf, ky = jr.split(key)
    field = cd.MLPField(d, w, 2, key=kf)
    model = cd.EulerResNet(field, num_steps, HORIZON)
    ys = jr.normal(ky, (b, d), jnp.float32)
    impls = _jax_impls(model, field, num_steps, quick)
    checks = []
    # The timed callables; their first call (below, in the checks) is the compile.
    fwd_calls = {n: c.jax_call(f, o, ys) for n, (o, f, _) in impls.items()}
    grad_calls = {n: c.jax_call(g, o, ys) for n, (o, _, g) in impls.items()}

    # Correctness first: every implementation against the fast path.
    ref_out = fwd_calls[FAST]()
    ref_loss, ref_grad = grad_calls[FAST]()
    ref_grad = _field_grad(ref_grad)
    for name in impls:
        if name == FAST:
            continue
        checks.append(c.check_close(f"{label} forward: {name} vs fast path",
                                    fwd_calls[name](), ref_out, rtol=1e-4, atol=1e-5))
        loss, grad = grad_calls[name]()
        for (path, g1), g2 in zip(jax.tree_util.tree_leaves_with_path(_field_grad(grad)),
                                  jax.tree.leaves(ref_grad)):
            checks.append(c.check_close(
                f"{label} gradient {jax.tree_util.keystr(path)}: {name} vs fast path",
                g1, g2, rtol=1e-3, atol=1e-6))

    notes = []
    if torch is None:
        notes.append(c.TORCH_MISSING)
    else:
        from . import _torch_models as tm

        tfield = tm.TorchMLPField(field)
        ty = c.to_torch(ys)

        def t_fwd():
            with torch.no_grad():
                return tm.euler_loop(tfield, ty, num_steps, HORIZON)

        def t_grad():
            tm.zero_grad(tfield)
            loss = torch.mean(tm.euler_loop(tfield, ty, num_steps, HORIZON) ** 2)
            loss.backward()
            return loss

        fwd_calls["torch eager loop"] = c.torch_call(t_fwd)
        grad_calls["torch eager loop"] = c.torch_call(t_grad)
        checks.append(c.check_close(f"{label} forward: torch eager vs fast path",
                                    fwd_calls["torch eager loop"]().cpu(), ref_out,
                                    rtol=1e-4, atol=1e-5))
        grad_calls["torch eager loop"]()
        for i, (g1, g2) in enumerate(zip(tm.grads_of(tfield), tm.jax_grads_like_torch(ref_grad))):
            checks.append(c.check_close(f"{label} gradient param {i}: torch eager vs fast path",
                                        g1.cpu(), g2, rtol=1e-3, atol=1e-6))
        if tde is None:
            notes.append(c.TORCHDIFFEQ_MISSING)
        else:
            t_span = c.to_torch(jnp.array([0.0, HORIZON], jnp.float32))
            opts = {"step_size": HORIZON / num_steps}

            def d_fwd():
                with torch.no_grad():
                    return tde.odeint(tfield, ty, t_span, method="euler", options=opts)[-1]

            def d_grad():
                tm.zero_grad(tfield)
                out = tde.odeint(tfield, ty, t_span, method="euler", options=opts)[-1]
                loss = torch.mean(out**2)
                loss.backward()
                return loss

            fwd_calls["torchdiffeq euler"] = c.torch_call(d_fwd)
            grad_calls["torchdiffeq euler"] = c.torch_call(d_grad)
            checks.append(c.check_close(f"{label} forward: torchdiffeq vs fast path",
                                        fwd_calls["torchdiffeq euler"]().cpu(), ref_out,
                                        rtol=1e-4, atol=1e-5))

    flops_fwd = num_steps * c.mlp_flops(b, [d, w, w, d])
    peak_call, peak_flops = c.peak_matmul_call(quick)
    rows = []
    for what, calls, flops in (("forward", fwd_calls, flops_fwd),
                               ("forward+gradient", grad_calls, 3 * flops_fwd)):
        timings = c.time_interleaved({**calls, c.PEAK_IN_ROUNDS: peak_call}, c.reps(quick))
        local_peak = peak_flops / (timings.pop(c.PEAK_IN_ROUNDS)["median_ms"] * 1e-3) / 1e9
        base = timings[FAST]["median_ms"]
        for name, t in timings.items():
            rows.append(c.rounded({
                "case": label, "what": what, "impl": name,
                "batch": b, "dim": d, "width": w, "N": num_steps,
                **t,
                "vs fast path (x slower)": t["median_ms"] / base,
                **c.gflops_row(flops, t["median_ms"], local_peak),
            }))
    return rows, checks, notes


def run(quick: bool = False) -> dict:
    sizes = QUICK_SIZES if quick else SIZES
    num_steps = QUICK_DEPTH if quick else DEPTH
    rows, checks, notes = [], [], []
    for i, (label, size) in enumerate(sizes.items()):
        r, ch, n = _case(label, size, num_steps, quick, jr.PRNGKey(i))
        rows += r
        checks += ch
        notes += [x for x in n if x not in notes]
    notes.append(
        "frac_peak is relative to the suite's peak (workload 'peak'); 'frac_peak (same "
        "rounds)' to a float32 matmul timed interleaved with these very rows, so that load "
        "from other processes affects numerator and denominator alike."
    )
    notes.append(
        "FLOPs count the MLP matmuls only (forward = N * 2 * batch * (d*w + w*w + w*d)); "
        "forward+gradient is counted as 3x forward (the backward does two matmuls per "
        "forward matmul)."
    )
    return {"name": "euler", "rows": rows, "notes": notes, "checks": checks}
