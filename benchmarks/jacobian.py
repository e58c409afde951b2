"""Workload 4: whole-network Jacobians `d y_N / d y_0` for a batch of states.

An Euler ResNet with `N = 64` steps on a 64-dimensional MLP field (2 hidden tanh
layers of width 64), 32 states, float32:

- `contdepth cd.jacobian (fwd)` / `(rev)`: `jax.vmap(lambda y: cd.jacobian(model, y,
  mode=...))` under `jit` (`"auto"` picks forward mode for depth models);
- `torch.func vmap(jacfwd)` / `vmap(jacrev)`: the same network as a PyTorch function
  of one state, `torch.func.vmap(torch.func.jacfwd(f))(ys)`.

All Jacobians are checked against the first before timing.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import contdepth as cd

from . import _common as c


FULL = dict(num_steps=64, dim=64, width=64, batch=32)
QUICK = dict(num_steps=8, dim=8, width=16, batch=4)
PRECISION_SWEEP = True  # run once per precision of `_common.precisions()`


def run(quick: bool = False) -> dict:
    cfg = QUICK if quick else FULL
    n, d, w, b = cfg["num_steps"], cfg["dim"], cfg["width"], cfg["batch"]
    kf, ky = jr.split(jr.PRNGKey(20))
    field = cd.MLPField(d, w, 2, key=kf)
    model = cd.EulerResNet(field, n, 1.0)
    ys = jr.normal(ky, (b, d), jnp.float32)

    def batched(mode):
        return eqx.filter_jit(lambda m, y: jax.vmap(lambda x: cd.jacobian(m, x, mode=mode))(y))

    impls = {"contdepth cd.jacobian (fwd)": batched("fwd"),
             "contdepth cd.jacobian (rev)": batched("rev")}
    calls = {name: c.jax_call(f, model, ys) for name, f in impls.items()}
    ref = calls["contdepth cd.jacobian (fwd)"]()  # first calls: the compiles
    checks = [c.check_close("cd.jacobian rev vs fwd", calls["contdepth cd.jacobian (rev)"](),
                            ref, rtol=1e-4, atol=1e-5)]
    notes = []
    torch = c.torch_or_none()
    if torch is None:
        notes.append(c.TORCH_MISSING)
    else:
        from . import _torch_models as tm

        tfield = tm.TorchMLPField(field)
        for p in tfield.parameters():
            p.requires_grad_(False)
        ty = c.to_torch(ys)

        def f(y):
            return tm.euler_loop(tfield, y, n, 1.0)

        for kind, jac in (("jacfwd", torch.func.jacfwd), ("jacrev", torch.func.jacrev)):
            fn = torch.func.vmap(jac(f))
            name = f"torch.func vmap({kind})"
            calls[name] = c.torch_call(fn, ty)
            checks.append(c.check_close(f"{name} vs cd.jacobian", calls[name]().cpu(), ref,
                                        rtol=1e-4, atol=1e-5))
    timings = c.time_interleaved(calls, c.reps(quick))
    best_torch = min((t["median_ms"] for k, t in timings.items() if k.startswith("torch")),
                     default=None)
    rows = []
    for name, t in timings.items():
        rows.append(c.rounded({
            "impl": name, "states": b, "dim": d, "width": w, "N": n, **t,
            "best torch.func / this": None if best_torch is None else best_torch / t["median_ms"],
        }))
    notes.append("'best torch.func / this' > 1 means faster than the faster torch.func variant.")
    return {"name": "jacobian", "rows": rows, "notes": notes, "checks": checks}
