"""A batched forward-Euler ResNet on an MLP field with a hand-written exact VJP.

Why this exists (measured on XLA:CPU, jax 0.10.2; see `benchmarks/README.md`): under
`jax.grad(... jax.vmap(model) ...)` the weight gradient of every linear layer at every
step is `dW = dz^T a`, a contraction over the *batch* axis, which is the leading
axis of both operands. XLA folds the transpose into the dot, and the CPU backend's
fast GEMM library (YNNPACK) rejects dots whose left operand is contracted on its
leading axis, so those dots fall back to a generic path that runs at about half the
FLOP rate of the forward dots. Here the backward pass is written by hand: the
cotangent is transposed explicitly behind an `optimization_barrier` (so XLA cannot
fold it back) and every dot is in the canonical `(m, k) @ (k, n)` layout. The
forward stores the step inputs and the hidden pre-activations (the same residuals
autodiff keeps), so the backward costs the same FLOPs as autodiff: gradients are
exact, not approximated, and agree with `jax.grad` of the generic scan to round-off.

Reverse mode only (a `jax.custom_vjp`); the generic `EulerResNet.__call__` keeps
forward mode (`jax.jvp`, `jax.jacfwd`, `cd.jacobian`).
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._step_rule import residual_update, step_time


@dataclasses.dataclass(frozen=True)
class EulerMLPConfig:
    """The static part of an `EulerResNet(MLPField(...))`: hashable, so it can be a
    non-differentiable argument of the custom VJP."""

    num_steps: int
    step_size: float
    activation: Callable
    time_dependent: bool


def _act(activation, z):
    # eqx.nn.MLP applies its activation to each scalar (a vmap over neurons): keep
    # exactly those semantics for activations that are not elementwise.
    return jax.vmap(jax.vmap(activation))(z)


def _canonical_t(x):
    """`x.T`, materialised: the barrier stops XLA from folding the transpose into
    the consuming dot (which would make that dot non-canonical, hence slow on CPU)."""
    return lax.optimization_barrier(jnp.transpose(x))


def _step_inputs(config, ys, k):
    """The first layer's input `[y, t_k]` (or `y`), batched: `(batch, in)`."""
    if not config.time_dependent:
        return ys
    t = step_time(k, jnp.asarray(config.step_size, dtype=ys.dtype))
    return jnp.concatenate([ys, jnp.broadcast_to(t, (ys.shape[0], 1))], axis=1)


def _mlp_forward(config, layers, a):
    """Returns the MLP output and the hidden pre-activations."""
    pre = []
    for i, (w, b) in enumerate(layers):
        z = a @ w.T
        if b is not None:
            z = z + b[None, :]
        if i < len(layers) - 1:
            pre.append(z)
            a = _act(config.activation, z)
        else:
            a = z
    return a, tuple(pre)


def _scan_forward(config, layers, ys, keep):
    h = jnp.asarray(config.step_size, dtype=ys.dtype)

    def body(y, k):
        out, pre = _mlp_forward(config, layers, _step_inputs(config, y, k))
        y_next = residual_update(y, h, out.astype(y.dtype))
        return y_next, ((y, pre) if keep else None)

    return lax.scan(body, ys, jnp.arange(config.num_steps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _euler_mlp(config, layers, ys):
    return _scan_forward(config, layers, ys, keep=False)[0]


def _euler_mlp_fwd(config, layers, ys):
    y_out, residuals = _scan_forward(config, layers, ys, keep=True)
    return y_out, (layers, residuals)


def _euler_mlp_bwd(config, saved, g):
    layers, (states, pres) = saved
    h = jnp.asarray(config.step_size, dtype=g.dtype)
    dim = g.shape[1]

    def body(carry, xs):
        gy, grads = carry
        k, y, pre = xs
        d = h * gy  # cotangent of the MLP output
        new: list = [None] * len(layers)
        for i in reversed(range(len(layers))):
            w, b = layers[i]
            a_in = (
                _step_inputs(config, y, k)
                if i == 0
                else _act(config.activation, pre[i - 1])
            )
            gw = _canonical_t(d) @ a_in
            gb = None if b is None else jnp.sum(d, axis=0)
            new[i] = (gw, gb)
            d = d @ w
            if i > 0:
                _, act_vjp = jax.vjp(lambda z: _act(config.activation, z), pre[i - 1])
                (d,) = act_vjp(d)
        gy = gy + d[:, :dim]  # drop the time column
        grads = jtu.tree_map(jnp.add, grads, tuple(new))
        return (gy, grads), None

    zeros = jtu.tree_map(jnp.zeros_like, layers)
    ks = jnp.arange(config.num_steps)
    (gy, grads), _ = lax.scan(body, (g, zeros), (ks, states, pres), reverse=True)
    return grads, gy


_euler_mlp.defvjp(_euler_mlp_fwd, _euler_mlp_bwd)


def euler_mlp_batched(config: EulerMLPConfig, layers, ys):
    """`y_N` for a batch `ys` of shape `(batch, dim)`; `layers` is a tuple of
    `(weight, bias_or_None)` pairs of an MLP with `activation` between layers and
    no final activation."""
    return _euler_mlp(config, tuple(layers), ys)
