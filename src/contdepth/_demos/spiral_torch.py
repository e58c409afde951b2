"""The spiral demo in PyTorch + torchdiffeq, for a like-for-like comparison with
[`contdepth._demos.spiral.fit_spiral`][].

This is torchdiffeq's `examples/ode_demo.py` (Chen et al. 2018, "Neural Ordinary
Differential Equations"; https://github.com/rtqichen/torchdiffeq) driven with exactly
what the JAX run used: the same data, the same initial weights, the same batches of
segment starts, the same per-step learning rates and Adam constants, the same loss, the
same solver (`dopri5`) and tolerances, float32. `torch` and `torchdiffeq` are imported
only when [`fit_spiral_torch`][] is called.
"""

import time
from typing import Any

import numpy as np


TORCH_MISSING = (
    "torch/torchdiffeq not importable: the torchdiffeq comparison was skipped "
    "(pip install torch torchdiffeq)."
)


def torch_available() -> bool:
    """Whether `torch` and `torchdiffeq` can be imported."""
    try:
        import torch  # noqa: F401  # pyright: ignore[reportMissingImports]
        import torchdiffeq  # noqa: F401  # pyright: ignore[reportMissingImports]
    except ImportError:
        return False
    return True


def _tensor(torch, array):
    return torch.from_numpy(np.array(array, np.float32))


def _make_func(torch, weights: dict[str, np.ndarray]):
    """torchdiffeq's `ODEFunc`: `forward(t, y) = net(y**3)`, weights copied from JAX
    (`weight` is `(out, in)` in both libraries)."""
    hidden, dim = weights["w1"].shape

    class ODEFunc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            nn = torch.nn
            self.net = nn.Sequential(
                nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim)
            )
            with torch.no_grad():
                for i, w, b in ((0, "w1", "b1"), (2, "w2", "b2")):
                    self.net[i].weight.copy_(_tensor(torch, weights[w]))
                    self.net[i].bias.copy_(_tensor(torch, weights[b]))

        def forward(self, t, y):
            return self.net(y**3)

    return ODEFunc()


def _full_errors(torch, odeint, func, ts, ys, solver_kw) -> tuple[float, float]:
    with torch.no_grad():
        pred = odeint(func, ys[0], ts, **solver_kw)
    diff = pred - ys
    return float(torch.mean(diff**2)), float(torch.mean(torch.abs(diff)))


def fit_spiral_torch(
    ts: np.ndarray,
    ys: np.ndarray,
    *,
    weights: dict[str, np.ndarray],
    batches: np.ndarray,
    learning_rates: np.ndarray,
    batch_time: int = 10,
    loss: str = "l1",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    method: str = "dopri5",
    adam: tuple[float, float, float] = (0.9, 0.999, 1e-8),
    weight_decay: float = 0.0,
    threads: int = 1,
    eval_every: int | None = None,
    keep_best: bool = False,
) -> dict[str, Any]:
    """Train torchdiffeq's spiral demo with the given data, weights and batches.

    **Arguments:**

    - `ts`: `(T,)` float32 times; `ys`: `(T, 2)` float32 observed trajectory.
    - `weights`: `{"w1": (H, 2), "b1": (H,), "w2": (2, H), "b2": (2,)}` initial
        weights (PyTorch's `(out, in)` layout).
    - `batches`: `(iterations, batch_size)` integer segment starts, one row per step.
    - `learning_rates`: `(iterations,)` learning rate of each step (the optax
        schedule evaluated at `0, 1, ...`), applied through `LambdaLR`.
    - `batch_time`: points per segment.
    - `loss`: `"l1"` (mean absolute error, torchdiffeq's choice) or `"mse"`.
    - `rtol`, `atol`, `method`: torchdiffeq solver options.
    - `adam`: `(b1, b2, eps)` of AdamW (eps added to `sqrt(v_hat)`, as in optax).
    - `weight_decay`: AdamW's decoupled weight decay (times the learning rate, as in
        `optax.adamw`).
    - `threads`: `torch.set_num_threads`. Default 1: the JAX run executes these tiny
        (20 x 50) operations on one thread at a time, and PyTorch's intra-op pool with
        more threads spins and slows down badly on a loaded machine.
    - `eval_every`: record the full-trajectory MSE every this many steps and after
        the last (part of the wall time, as in the JAX run).
    - `keep_best`: report the evaluated weights with the lowest MSE (as
        `cd.EarlyStopping(monitor="mse")` does), not the last ones.

    **Returns:**

    A dict with `mse`, `mae` (full trajectory from `ys[0]`), `last_mse` (of the last
    iterate), `best_step`, `seconds` (wall time of training and the evaluations),
    `loss` (per-step list), `validation`
    (`{"step": [...], "mse": [...]}`), `threads` and the versions used.
    """
    # Optional extras (the `torch` comparison only), absent from the type-check env.
    import torch  # pyright: ignore[reportMissingImports]
    import torchdiffeq  # pyright: ignore[reportMissingImports]

    if loss not in ("l1", "mse"):
        raise ValueError(f"`loss` must be 'l1' or 'mse', got {loss!r}.")
    batches = np.asarray(batches)
    lrs = np.asarray(learning_rates, np.float64)
    if batches.ndim != 2 or batches.shape[0] == 0 or lrs.shape != (batches.shape[0],):
        raise ValueError(
            f"`batches` must be (iterations, batch_size) with iterations >= 1 and "
            f"`learning_rates` (iterations,), got {batches.shape} and {lrs.shape}."
        )
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t_all = torch.from_numpy(np.array(ts, np.float32))
    y_all = torch.from_numpy(np.array(ys, np.float32))
    func = _make_func(torch, weights)
    b1, b2, eps = adam
    opt = torch.optim.AdamW(
        func.parameters(), lr=1.0, betas=(b1, b2), eps=eps, weight_decay=weight_decay
    )
    last = len(lrs) - 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: float(lrs[min(i, last)]))
    kw = dict(rtol=rtol, atol=atol, method=method)
    offsets = torch.arange(batch_time)
    t_seg = t_all[:batch_time]
    losses, val_steps, val_mse, best, latest = [], [], [], None, None
    start = time.perf_counter()
    for i, rows in enumerate(batches):
        s = torch.from_numpy(np.asarray(rows, np.int64))
        batch_y0 = y_all[s]  # (B, 2)
        batch_y = y_all[s[None, :] + offsets[:, None]]  # (T, B, 2), torchdiffeq layout
        opt.zero_grad()
        pred = torchdiffeq.odeint(func, batch_y0, t_seg, **kw)
        diff = pred - batch_y
        value = torch.mean(torch.abs(diff)) if loss == "l1" else torch.mean(diff**2)
        value.backward()
        opt.step()
        sched.step()
        losses.append(float(value.detach()))
        if (eval_every and (i + 1) % eval_every == 0) or i + 1 == len(batches):
            errors = _full_errors(torch, torchdiffeq.odeint, func, t_all, y_all, kw)
            val_steps.append(i + 1)
            val_mse.append(errors[0])
            latest = (i + 1, errors)
            if best is None or errors[0] < best[1][0]:
                best = (i + 1, errors)
    seconds = time.perf_counter() - start
    # The last step always evaluates, so (with `batches` non-empty) both are set.
    final = best if keep_best else latest
    assert final is not None
    best_step, (mse, mae) = final
    return {
        "mse": mse,
        "mae": mae,
        "last_mse": val_mse[-1],
        "best_step": best_step,
        "seconds": seconds,
        "loss": losses,
        "validation": {"step": val_steps, "mse": val_mse},
        "threads": threads,
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", "unknown"),
    }
