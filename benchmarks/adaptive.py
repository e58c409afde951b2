"""Workload 3: adaptive Neural ODE solves, Dopri5 and Tsit5 at rtol = atol = 1e-5.

The same MLP field and the two sizes of the Euler workload, `T = 1`, float32,
forward and forward+gradient (mean-square loss, gradient w.r.t. the parameters).

- `contdepth (batch as one system)`: `cd.NeuralODE` on a field that applies the MLP
  to the whole `(batch, dim)` state, so one step size serves the batch and the error
  norm is the RMS over all of it -- exactly what torchdiffeq does with a batched
  tensor. Gradient: contdepth's default `RecursiveCheckpointAdjoint` (exact
  backpropagation through the solver, like `torchdiffeq.odeint`).
- `contdepth (per-sample vmap)`: `jax.vmap(cd.NeuralODE(field, ...))`, every sample
  with its own steps (the vmapped while loop runs until the slowest sample is done).
- `torchdiffeq dopri5`: `torchdiffeq.odeint(F, y0, [0, T], rtol, atol, method="dopri5")`,
  backpropagation through the solver. torchdiffeq has no Tsit5.

Both libraries use the same controller (I-controller, safety 0.9, factors 0.2/10),
RMS error norm and Hairer's initial step selection, so step counts are close but
not always equal: every row reports its steps, and `ms/step` compares speed at equal
work.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import contdepth as cd

from . import _common as c
from .euler import HORIZON, QUICK_SIZES, SIZES


TOL = 1e-5
PRECISION_SWEEP = True  # run once per precision of `_common.precisions()`


class BatchField(cd.AbstractVectorField):
    """A field on a whole batch `(batch, dim)`: the MLP field applied to every row."""

    field: cd.MLPField

    def __call__(self, t, y, args=None):
        return jax.vmap(lambda x: self.field(t, x, args))(y)

    def check_state(self, y, name="y"):
        if y.ndim != 2:
            raise ValueError(f"`{name}` must be a (batch, dim) batch, got shape {y.shape}")
        self.field.check_state(y[0], name)

    def lipschitz_bound(self):
        return self.field.lipschitz_bound()


def _solve_whole(model, ys):
    sol = model.solve(ys)
    return sol.ys[-1], sol.stats["num_steps"]


def _solve_per_sample(model, ys):
    def one(y):
        sol = model.solve(y)
        return sol.ys[-1], sol.stats["num_steps"]

    return jax.vmap(one)(ys)


def _solvers(quick):
    if quick:
        return {"dopri5": diffrax.Dopri5()}
    return {"dopri5": diffrax.Dopri5(), "tsit5": diffrax.Tsit5()}


def _case(label, size, quick, key):
    torch = c.torch_or_none()
    tde = c.torchdiffeq_or_none()
    b, d, w = size["batch"], size["dim"], size["width"]
    kf, ky = jr.split(key)
    field = cd.MLPField(d, w, 2, key=kf)
    ys = jr.normal(ky, (b, d), jnp.float32)
    rows, checks, notes = [], [], []
    for sname, solver in _solvers(quick).items():
        whole = cd.NeuralODE(BatchField(field), HORIZON, solver=solver, rtol=TOL, atol=TOL)
        per = cd.NeuralODE(field, HORIZON, solver=solver, rtol=TOL, atol=TOL)
        # Forward rows time `NeuralODE.solve` (the solve behind `__call__`, which adds
        # only finiteness checks), so the step count comes from the timed call itself.
        fwd = {
            "contdepth (batch as one system)": (whole, eqx.filter_jit(_solve_whole)),
            "contdepth (per-sample vmap)": (per, eqx.filter_jit(_solve_per_sample)),
        }
        grad = {
            "contdepth (batch as one system)": (whole, eqx.filter_jit(
                eqx.filter_value_and_grad(lambda m, y: jnp.mean(m(y) ** 2)))),
            "contdepth (per-sample vmap)": (per, eqx.filter_jit(
                eqx.filter_value_and_grad(lambda m, y: jnp.mean(jax.vmap(m)(y) ** 2)))),
        }
        if quick:  # CI smoke run: one mode, forward only, keeps the compile count down
            fwd.pop("contdepth (per-sample vmap)")
            grad = {}
        # The timed callables (solution and step count); their first call, just below,
        # is the compile.
        fcalls = {n: c.jax_call(f, o, ys) for n, (o, f) in fwd.items()}
        gcalls = {n: c.jax_call(g, o, ys) for n, (o, g) in grad.items()}
        outs = {n: call() for n, call in fcalls.items()}
        steps = {n: int(jnp.max(s)) for n, (_, s) in outs.items()}
        ref = outs["contdepth (batch as one system)"][0]
        if "contdepth (per-sample vmap)" in outs:
            checks.append(c.check_close(f"{label} {sname}: per-sample vs batch-as-one-system",
                                        outs["contdepth (per-sample vmap)"][0], ref,
                                        rtol=1e-3, atol=1e-3))
        if torch is not None and tde is not None and sname == "dopri5":
            from . import _torch_models as tm

            tfield = tm.TorchMLPField(field)
            counter = {"nfe": 0}

            def counted(t, y):
                counter["nfe"] += 1
                return tfield(t, y)

            ty = c.to_torch(ys)
            t_span = c.to_torch(jnp.array([0.0, HORIZON], jnp.float32))

            def t_fwd():
                with torch.no_grad():
                    return tde.odeint(counted, ty, t_span, rtol=TOL, atol=TOL, method="dopri5")[-1]

            def t_grad():
                tm.zero_grad(tfield)
                out = tde.odeint(counted, ty, t_span, rtol=TOL, atol=TOL, method="dopri5")[-1]
                loss = torch.mean(out**2)
                loss.backward()
                return loss

            fcalls["torchdiffeq dopri5"] = c.torch_call(t_fwd)
            counter["nfe"] = 0
            out = fcalls["torchdiffeq dopri5"]()
            # dopri5 is FSAL: 2 evaluations choose the first step, then 6 per step.
            steps["torchdiffeq dopri5"] = round((counter["nfe"] - 2) / 6)
            checks.append(c.check_close(f"{label} dopri5: torchdiffeq vs contdepth",
                                        out.cpu(), ref, rtol=1e-3, atol=1e-3))
            if grad:
                _, g_ref = gcalls["contdepth (batch as one system)"]()
                gcalls["torchdiffeq dopri5"] = c.torch_call(t_grad)
                gcalls["torchdiffeq dopri5"]()
                for i, (g1, g2) in enumerate(zip(tm.grads_of(tfield),
                                                 tm.jax_grads_like_torch(g_ref.field.field))):
                    checks.append(c.check_close(
                        f"{label} dopri5 gradient param {i}: torchdiffeq vs contdepth",
                        g1.cpu(), g2, rtol=2e-2, atol=1e-4))
        for what, calls in (("forward", fcalls), ("forward+gradient", gcalls)):
            if not calls:
                continue
            timings = c.time_interleaved(calls, c.reps(quick))
            base = timings["contdepth (batch as one system)"]
            for name, t in timings.items():
                per_step = t["median_ms"] / max(steps[name], 1)
                rows.append(c.rounded({
                    "case": label, "solver": sname, "what": what, "impl": name,
                    "batch": b, "dim": d, "width": w, "steps": steps[name], **t,
                    "ms/step": per_step,
                    "vs contdepth batch (x slower)": t["median_ms"] / base["median_ms"],
                    "per-step vs contdepth batch": per_step
                    / (base["median_ms"] / max(steps["contdepth (batch as one system)"], 1)),
                }))
    if torch is None:
        notes.append(c.TORCH_MISSING)
    elif tde is None:
        notes.append(c.TORCHDIFFEQ_MISSING)
    return rows, checks, notes


def run(quick: bool = False) -> dict:
    sizes = {"overhead-bound": QUICK_SIZES["overhead-bound"]} if quick else SIZES
    rows, checks, notes = [], [], []
    for i, (label, size) in enumerate(sizes.items()):
        r, ch, n = _case(label, size, quick, jr.PRNGKey(10 + i))
        rows += r
        checks += ch
        notes += [x for x in n if x not in notes]
    notes += [
        "steps = accepted + rejected steps; for torchdiffeq derived from its function "
        "evaluations, (nfe - 2) / 6; for the per-sample vmap row the largest over the "
        "batch (the vmapped loop runs that many).",
        "torchdiffeq has no Tsit5: Tsit5 rows are contdepth only.",
    ]
    return {"name": "adaptive", "rows": rows, "notes": notes, "checks": checks}
