import math
from collections.abc import Callable

import jax


# Global Lipschitz constants of common activations (sup |f'|).
_KNOWN: dict[Callable, float] = {
    jax.nn.tanh: 1.0,
    jax.numpy.tanh: 1.0,
    jax.nn.relu: 1.0,
    jax.nn.softplus: 1.0,
    jax.nn.sigmoid: 0.25,
    jax.nn.elu: 1.0,
    jax.nn.leaky_relu: 1.0,
    jax.nn.silu: 1.0998,  # max of d/dx x*sigmoid(x) is ~1.09984
    jax.nn.swish: 1.0998,
    jax.nn.gelu: 1.1290,  # max of d/dx gelu(x) is ~1.12897
}


def activation_lipschitz(activation: Callable, override: float | None) -> float:
    if override is not None:
        return float(override)
    if activation in _KNOWN:
        return _KNOWN[activation]
    name = getattr(activation, "__name__", repr(activation))
    raise ValueError(
        f"No known Lipschitz constant for activation {name}. Pass "
        "`activation_lipschitz=` (the supremum of |activation'|) when building the field."
    )


def lipschitz_is_finite(x: float) -> bool:
    return math.isfinite(x)
