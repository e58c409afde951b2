"""Workload 8: training throughput on the digits classifier (samples / second).

`Linear(64 -> 64) -> body -> Linear(64 -> 10)`, softmax cross-entropy, Adam(1e-3),
batch 128, one optimiser step timed per run (data already on the device):

- `contdepth EulerResNet (fast path)`: `cd.make_classifier("euler", depth=16)`, the
  body through `batched_apply` (fused batched Euler-MLP, exact custom VJP);
- `contdepth EulerResNet (vmap)`: the same model, `jax.vmap` of the whole
  classifier (what `cd.train` does);
- `contdepth NeuralODE`: `cd.make_classifier("ode")`, Tsit5, rtol 1e-3, atol 1e-5;
- `torch EulerResNet`: the same network in PyTorch (weights copied), eager loop.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import contdepth as cd
from contdepth._fastpath.batched import batched_apply

from . import _common as c


BATCH, DIM, WIDTH, DEPTH = 128, 64, 64, 16
QUICK = dict(batch=32, depth=4)
PRECISION_SWEEP = True  # run once per precision of `_common.precisions()`


def _logits_vmap(model, x):
    return jax.vmap(model)(x)


def _logits_fast(model, x):
    h = jax.vmap(model.encoder)(x)
    h = batched_apply(model.body, h)
    return jax.vmap(model.readout)(h)


def _make_step(logits_fn, optimizer):
    def loss(model, x, y):
        logits = logits_fn(model, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        value, grads = eqx.filter_value_and_grad(loss)(model, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, value, grads

    return step


def run(quick: bool = False) -> dict:
    batch = QUICK["batch"] if quick else BATCH
    depth = QUICK["depth"] if quick else DEPTH
    (x_train, y_train), _ = cd.datasets.digits()
    x = jnp.asarray(x_train[:batch], jnp.float32)
    y = jnp.asarray(y_train[:batch])
    optimizer = optax.adam(1e-3)
    key = jr.PRNGKey(50)
    f32 = lambda m: jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, m)
    euler = f32(cd.make_classifier("euler", num_features=64, num_classes=10, dim=DIM,
                                   width=WIDTH, depth=depth, key=key))
    ode = f32(cd.make_classifier("ode", num_features=64, num_classes=10, dim=DIM,
                                 width=WIDTH, depth=depth, key=key))
    impls = {
        "contdepth EulerResNet (fast path)": (euler, _make_step(_logits_fast, optimizer)),
        "contdepth EulerResNet (vmap)": (euler, _make_step(_logits_vmap, optimizer)),
        "contdepth NeuralODE (Tsit5)": (ode, _make_step(_logits_vmap, optimizer)),
    }
    notes = []
    if quick:  # its gradient is the slowest compile of the suite
        impls.pop("contdepth NeuralODE (Tsit5)")
        notes.append("--quick: NeuralODE row skipped")
    states = {name: optimizer.init(eqx.filter(m, eqx.is_array)) for name, (m, _) in impls.items()}
    # The timed callables; their first call (the first step, checked) is the compile.
    calls = {name: c.jax_call(step, m, states[name], x, y) for name, (m, step) in impls.items()}
    first = {name: call() for name, call in calls.items()}
    checks = [c.check_close("first-step loss: fast path vs vmap",
                            first["contdepth EulerResNet (fast path)"][2],
                            first["contdepth EulerResNet (vmap)"][2], rtol=1e-5, atol=1e-6)]
    g_fast = first["contdepth EulerResNet (fast path)"][3].body.field.mlp.layers[0].weight
    g_vmap = first["contdepth EulerResNet (vmap)"][3].body.field.mlp.layers[0].weight
    checks.append(c.check_close("first-step body gradient: fast path vs vmap", g_fast, g_vmap,
                                rtol=1e-3, atol=1e-6))
    torch = c.torch_or_none()
    if torch is None:
        notes.append(c.TORCH_MISSING)
    else:
        from . import _torch_models as tm

        class TorchClassifier(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.enc = _torch_linear(model.encoder)
                self.field = tm.TorchMLPField(model.body.field)
                self.out = _torch_linear(model.readout)

            def forward(self, inp):
                h = tm.euler_loop(self.field, self.enc(inp), depth, 1.0)
                return self.out(h)

        net = TorchClassifier(euler)
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tx, ty = c.to_torch(x), c.to_torch(y).long()

        def t_step():
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(tx), ty)
            loss.backward()
            topt.step()
            return loss

        with torch.no_grad():
            t_loss = torch.nn.functional.cross_entropy(net(tx), ty)
        checks.append(c.check_close("first-step loss: torch vs contdepth", t_loss.cpu(),
                                    first["contdepth EulerResNet (vmap)"][2], rtol=1e-4, atol=1e-5))
        # Its first call is the warm-up in `time_interleaved` (first_ms / compile_ms).
        calls["torch EulerResNet"] = c.torch_call(t_step)
    timings = c.time_interleaved(calls, c.reps(quick))
    base = timings["contdepth EulerResNet (fast path)"]["median_ms"]
    rows = [
        c.rounded({"impl": name, "batch": batch, "dim": DIM, "width": WIDTH, "depth": depth,
                   **t, "samples/s": batch / (t["median_ms"] * 1e-3),
                   "vs fast path (x slower)": t["median_ms"] / base})
        for name, t in timings.items()
    ]
    notes.append("one timed run = one Adam step on one batch; the optimiser state is not "
                 "advanced between runs for the JAX rows (same work every run)")
    return {"name": "training", "rows": rows, "notes": notes, "checks": checks}


def _torch_linear(linear):
    import numpy as np
    import torch

    out_f, in_f = linear.weight.shape
    lin = torch.nn.Linear(in_f, out_f, device=c.torch_device())
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.array(linear.weight)))
        lin.bias.copy_(torch.from_numpy(np.array(linear.bias)))
    return lin
