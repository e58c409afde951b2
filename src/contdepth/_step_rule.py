"""The explicit step rule, written once.

Every discrete model and every step-by-step analysis in contdepth advances a state by
an explicit Runge-Kutta step `y_{k+1} = y_k + h sum_i b_i k_i` at the time `t_k = k h`.
Forward Euler (`b = (1,)`) is the residual block `y + h F(t, y)`; the reversible models
apply it to half-states or to a velocity. The Butcher tableaux below are also where
the stability functions of [`contdepth.stability_function`][] come from.

Reference: Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", II.1.
"""

from fractions import Fraction
from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Int

from ._custom_types import Args, State


Method = Literal["euler", "heun", "midpoint", "rk4"]
METHODS: tuple[str, ...] = ("euler", "heun", "midpoint", "rk4")

_F = Fraction
# (A strictly lower triangular, b, c) of each method, exact.
_TABLEAUX = {
    "euler": ((), (_F(1),), (_F(0),)),
    "heun": (((_F(1),),), (_F(1, 2), _F(1, 2)), (_F(0), _F(1))),
    "midpoint": (((_F(1, 2),),), (_F(0), _F(1)), (_F(0), _F(1, 2))),
    "rk4": (
        ((_F(1, 2),), (_F(0), _F(1, 2)), (_F(0), _F(0), _F(1))),
        (_F(1, 6), _F(1, 3), _F(1, 3), _F(1, 6)),
        (_F(0), _F(1, 2), _F(1, 2), _F(1)),
    ),
}


def step_time(k: Int[Array, ""], h: Array) -> Array:
    """`t_k = k h` in the dtype of `h` (computed directly, never accumulated)."""
    return k.astype(h.dtype) * h


def residual_update(y: State, h, increment: State) -> State:
    """`y + h * increment`: the residual (forward-Euler) update."""
    return y + h * increment


def rk_step(method: str, field, t, y: State, h, args: Args = None) -> State:
    """One explicit Runge-Kutta step of `method` on `dy/dt = field(t, y, args)`.

    Zero tableau entries are skipped, so `"euler"` is exactly `y + h field(t, y)`.
    """
    a, b, c = _TABLEAUX[method]
    stages = []
    for i in range(len(b)):
        y_i = y
        for j, a_ij in enumerate(a[i - 1] if i > 0 else ()):
            if a_ij:
                y_i = y_i + (float(a_ij) * h) * stages[j]
        t_i = t + float(c[i]) * h if c[i] else t
        stages.append(field(t_i, y_i, args))
    increment = None
    for b_i, k_i in zip(b, stages):
        if b_i:
            term = k_i if b_i == 1 else float(b_i) * k_i
            increment = term if increment is None else increment + term
    assert increment is not None  # the weights `b` sum to 1: some stage is used
    return residual_update(y, h, increment)


def stability_coefficients(method: str) -> tuple[float, ...]:
    """Coefficients `(1, b^T 1, b^T A 1, b^T A^2 1, ...)` of the stability polynomial
    `R(z) = 1 + sum_j z^j b^T A^{j-1} 1` of an explicit method (`A` nilpotent)."""
    a_rows, b, _ = _TABLEAUX[method]
    s = len(b)
    a = [[_F(0)] * s for _ in range(s)]
    for i, row in enumerate(a_rows, start=1):
        a[i][: len(row)] = row
    coefficients, power = [_F(1)], [_F(1)] * s
    for _ in range(s):
        coefficients.append(sum((b_i * p for b_i, p in zip(b, power)), _F(0)))
        power = [sum((a[i][j] * power[j] for j in range(s)), _F(0)) for i in range(s)]
    while len(coefficients) > 1 and coefficients[-1] == 0:
        coefficients.pop()
    return tuple(float(c) for c in coefficients)


def horner(coefficients, z) -> Array:
    """`sum_j coefficients[j] z^j` by Horner's rule; `coefficients` a sequence of
    numbers or an array (e.g. a traced row of a table of methods)."""
    out = jnp.zeros_like(z) + coefficients[-1]
    for j in range(len(coefficients) - 2, -1, -1):
        out = out * z + coefficients[j]
    return out


def stability_polynomial(method: str, z) -> Array:
    """`R(z)` by Horner's rule from [`stability_coefficients`]."""
    return horner(stability_coefficients(method), jnp.asarray(z))
