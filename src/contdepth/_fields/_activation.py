"""Lipschitz constants `sup |f'|` of the activations contdepth knows: computed, not
typed in, by evaluating `jax.grad(f)` in float64, then rounded up."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


# Activations whose derivative is piecewise smooth with finitely many bumps and
# monotone (or constant) beyond |x| = _HALF_WIDTH: for these a fine grid, a local
# refinement around its largest values and a look at the tails find the supremum. An
# arbitrary callable has no such guarantee, so anything else needs
# `activation_lipschitz=`.
KNOWN_ACTIVATIONS: tuple[Callable, ...] = (
    jax.nn.tanh,
    jnp.tanh,
    jax.nn.relu,
    jax.nn.relu6,
    jax.nn.softplus,
    jax.nn.sigmoid,
    jax.nn.elu,
    jax.nn.celu,
    jax.nn.selu,
    jax.nn.leaky_relu,
    jax.nn.silu,  # also jax.nn.swish
    jax.nn.gelu,  # jax's default, the tanh approximation
    jax.nn.mish,
    jax.nn.hard_tanh,
    jax.nn.hard_sigmoid,
    jax.nn.hard_silu,  # also jax.nn.hard_swish
    jax.nn.soft_sign,
)

_HALF_WIDTH = 40.0
_GRID_POINTS = 800_001  # spacing 1e-4
_TAILS = (60.0, 1e2, 1e3, 1e4, 1e6)
_CANDIDATES = 16
_GOLDEN_ITERS = 120
# A few ulps of float64 cover the rounding in evaluating f' at the maximiser.
_RELATIVE_MARGIN = 1e-12

_cache: dict[Callable, float] = {}


def _golden_max(df, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest `|df|` found by golden-section search on each bracket `[lo, hi]`."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    best = np.maximum(df(lo), df(hi))
    for _ in range(_GOLDEN_ITERS):
        c = hi - ratio * (hi - lo)
        d = lo + ratio * (hi - lo)
        fc, fd = df(c), df(d)
        best = np.maximum(best, np.maximum(fc, fd))
        left = fc >= fd
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
    return best


def sup_abs_derivative(activation: Callable) -> float:
    """`sup_x |activation'(x)|` for a scalar activation, computed in float64 and
    rounded up (next float64 above, plus a relative margin of 1e-12)."""
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        grad = jax.jit(jax.vmap(jax.grad(lambda x: activation(x))))

        def df(x):
            return np.abs(np.asarray(grad(jnp.asarray(x, jnp.float64))))

        xs = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, _GRID_POINTS)
        values = df(xs)
        tails = np.asarray(_TAILS)
        tail_values = df(np.concatenate([tails, -tails]))
        top = np.argsort(values)[-_CANDIDATES:]
        lo = xs[np.clip(top - 1, 0, xs.size - 1)]
        hi = xs[np.clip(top + 1, 0, xs.size - 1)]
        refined = _golden_max(df, lo, hi)
    found = np.concatenate([values, tail_values, refined])
    if not np.all(np.isfinite(found)):
        raise ValueError(
            f"The derivative of activation {_name(activation)} is NaN or inf "
            "somewhere: it has no finite Lipschitz constant."
        )
    sup = float(np.max(found))
    return float(np.nextafter(sup, np.inf)) * (1.0 + _RELATIVE_MARGIN)


def _name(activation) -> str:
    return getattr(activation, "__name__", repr(activation))


def known_lipschitz(activation: Callable) -> float | None:
    """The computed (cached) `sup |activation'|` for a known activation, else `None`."""
    try:
        known = activation in KNOWN_ACTIVATIONS
    except TypeError:  # an unhashable or oddly-comparing callable
        return None
    if not known:
        return None
    if activation not in _cache:
        _cache[activation] = sup_abs_derivative(activation)
    return _cache[activation]


def activation_lipschitz(activation: Callable, override: float | None) -> float:
    if override is not None:
        return float(override)
    lip = known_lipschitz(activation)
    if lip is not None:
        return lip
    raise ValueError(
        f"No known Lipschitz constant for activation {_name(activation)}. Pass "
        "`activation_lipschitz=` (the supremum of |activation'|) when building the "
        "field."
    )


def lipschitz_is_finite(x: float) -> bool:
    return math.isfinite(x)
