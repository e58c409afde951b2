"""Depth families: what [`contdepth.depth_sweep`][] sweeps.

A depth family is any callable `family(N) -> model`, where a model is any single-sample
callable `model(y, args) -> y_out` with a square Jacobian. The families here are small
frozen modules, so equal arguments give equal models and the sweep's compiled
measurements are reused. Everything else is an optional capability, discovered rather
than demanded:

- `limit(dtype) -> model`: the continuous limit `N -> inf` (e.g. the Neural ODE of an
    Euler family): the sweep's default reference.
- `bounds(N) -> (upper, lower) | None`: a priori bounds on `σ_max`, `σ_min` of the
    Jacobian at depth `N` (Grönwall for forward Euler); `None` when unknown.
- `lipschitz() -> float`: the Lipschitz bound `L` of the family's field (`inf` if
    unknown), shown in the sweep's header.
- `traced_depth(N) -> model`: the same model with its depth as a traced integer, so
    one compiled program serves every `N` (forward-mode autodiff only).
"""

import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._adjoint.reversible_scan import check_memory, Memory
from .._fields.coupled import CoupledField
from .._fields.piecewise import PiecewiseField
from .._fields.protocol import (
    ARGS_UNKNOWN,
    check_field,
    check_field_state,
    lipschitz_bound,
)
from .._models.euler import EulerResNet
from .._models.highway import HighwayNet
from .._models.momentum import MomentumResNet
from .._models.neural_ode import NeuralODE
from .._models.reversible import ReversibleResNet
from .._models.scaled import ScaledResidualNet
from .._step_rule import rk_step, step_time
from .._validation import (
    check_callable,
    check_key,
    check_positive_float,
    check_positive_int,
)
from .baselines import RandomStack


def tight_ode(field, horizon: float, dtype) -> NeuralODE:
    """The Neural ODE of `field` on `[0, horizon]` with tolerances tight for `dtype`
    (`rtol = 1e-10, atol = 1e-12` in float64, `1e-6, 1e-8` otherwise), Tsit5."""
    tight = jnp.finfo(dtype).bits >= 64
    return NeuralODE(
        field,
        horizon,
        rtol=1e-10 if tight else 1e-6,
        atol=1e-12 if tight else 1e-8,
        max_steps=100_000,
    )


def _lipschitz(field) -> float:
    return float(lipschitz_bound(field))


def gronwall(lipschitz: float, horizon: float, num_steps: int):
    """`((1 + hL)^N, (1 - hL)^N if hL < 1 else 0)` with `h = horizon / N`: bounds on
    `σ_max`, `σ_min` of `N` forward-Euler steps of an `L`-Lipschitz field; `None` when
    `L` is infinite."""
    if not math.isfinite(lipschitz):
        return None
    hl = horizon / num_steps * lipschitz
    return (1 + hl) ** num_steps, (1 - hl) ** num_steps if hl < 1 else 0.0


class TracedEulerResNet(eqx.Module):
    """`EulerResNet(field, N, horizon)` with `N` and `h = horizon / N` as arrays: one
    compiled program serves every depth. Built by `EulerFamily.traced_depth(N)` from an
    `EulerResNet` (whose checks and warnings run there); it runs the same float ops
    (`y + h F(k h, y)`, `h` rounded once from the double `horizon / N` to the state's
    dtype) in a `while` loop, so it gives the same numbers as the `scan` of
    `EulerResNet` (float32 and float64 states). Forward-mode autodiff only."""

    field: Callable
    num_steps: Int[Array, ""]
    step_size: Float[Array, ""]  # h = horizon / N, in double precision where enabled

    @classmethod
    def of(cls, model: EulerResNet) -> "TracedEulerResNet":
        return cls(
            model.field,
            jnp.asarray(model.num_steps, dtype=jnp.int32),
            jnp.asarray(np.float64(model.step_size)),
        )

    def check_state(self, y, name: str = "y", args=ARGS_UNKNOWN) -> None:
        check_field_state(self.field, y, args, name)

    def __call__(self, y, args=None):
        self.check_state(y, args=args)
        h = self.step_size.astype(y.dtype)

        def body(k, y):
            return rk_step("euler", self.field, step_time(k, h), y, h, args)

        return lax.fori_loop(0, self.num_steps, body, y)


class EulerFamily(eqx.Module):
    """`N -> EulerResNet(field, N, horizon)`: depth is time, `h = T/N`."""

    field: Callable
    horizon: float = eqx.field(static=True)

    def __call__(self, num_steps: int) -> EulerResNet:
        return EulerResNet(self.field, num_steps, self.horizon)

    def traced_depth(self, num_steps: int) -> TracedEulerResNet:
        return TracedEulerResNet.of(self(num_steps))

    def limit(self, dtype) -> NeuralODE:
        return tight_ode(self.field, self.horizon, dtype)

    def bounds(self, num_steps: int):
        return gronwall(self.lipschitz(), self.horizon, num_steps)

    def lipschitz(self) -> float:
        return _lipschitz(self.field)


class UnscaledFamily(eqx.Module):
    """`N -> EulerResNet(field, N, horizon=N)`: the classic `y + F(y)` stack (`h = 1`),
    whose horizon grows with `N`."""

    field: Callable

    def __call__(self, num_steps: int) -> EulerResNet:
        return EulerResNet(self.field, num_steps, float(num_steps))

    def traced_depth(self, num_steps: int) -> TracedEulerResNet:
        return TracedEulerResNet.of(self(num_steps))

    def lipschitz(self) -> float:
        return _lipschitz(self.field)


class RandomStackFamily(eqx.Module):
    """`N -> ` a random stack of depth `N` (`kind="plain"`: tanh layers, no skip;
    `"branch"`: i.i.d. random residual branches scaled by `1/N` or `1/√N`), its weights
    drawn from `fold_in(key, N)`."""

    dim: int = eqx.field(static=True)
    key: PRNGKeyArray
    kind: Literal["plain", "branch"] = eqx.field(static=True)
    scale: Literal["1", "1/N", "1/sqrt(N)"] = eqx.field(static=True)

    def _scale(self, num_steps: int) -> float:
        return {"1": 1.0, "1/N": 1 / num_steps, "1/sqrt(N)": 1 / math.sqrt(num_steps)}[
            self.scale
        ]

    def _stack(self, num_steps: int, depth) -> RandomStack:
        return RandomStack(
            key=jr.fold_in(self.key, num_steps),
            num_layers=depth,
            scale=jnp.asarray(self._scale(num_steps)),
            kind=self.kind,
            dim=self.dim,
        )

    def __call__(self, num_steps: int) -> RandomStack:
        return self._stack(num_steps, int(num_steps))

    def traced_depth(self, num_steps: int) -> RandomStack:
        return self._stack(num_steps, jnp.asarray(num_steps))


class MomentumFamily(eqx.Module):
    """`N -> MomentumResNet(field, N, horizon, gamma=..., memory=...)`."""

    field: Callable
    horizon: float = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    memory: Memory = eqx.field(static=True)

    def __call__(self, num_steps: int) -> MomentumResNet:
        return MomentumResNet(
            self.field, num_steps, self.horizon, gamma=self.gamma, memory=self.memory
        )

    def limit(self, dtype) -> NeuralODE:
        return tight_ode(self.field, self.horizon, dtype)

    def lipschitz(self) -> float:
        return _lipschitz(self.field)


class ReversibleFamily(eqx.Module):
    """`N -> ReversibleResNet(field_a, field_b, N, horizon, memory=...)`."""

    field_a: Callable
    field_b: Callable
    horizon: float = eqx.field(static=True)
    memory: Memory = eqx.field(static=True)

    def __call__(self, num_steps: int) -> ReversibleResNet:
        return ReversibleResNet(
            self.field_a, self.field_b, num_steps, self.horizon, memory=self.memory
        )

    def limit(self, dtype) -> NeuralODE:
        return tight_ode(CoupledField(self.field_a, self.field_b), self.horizon, dtype)

    def lipschitz(self) -> float:
        return _lipschitz(CoupledField(self.field_a, self.field_b))


class ScaledResidualFamily(eqx.Module):
    """`N -> ScaledResidualNet(field_or_fields, N, alpha=..., beta=...)`."""

    field: Callable | None
    fields: Callable | None = eqx.field(static=True)
    alpha: float | Literal["nonexpansive"] | Callable[[int], float] = eqx.field(
        static=True
    )
    beta: float = eqx.field(static=True)

    def __call__(self, num_steps: int) -> ScaledResidualNet:
        if self.fields is None:
            assert self.field is not None  # exactly one is given
            layers = self.field
        else:
            layers = list(self.fields(num_steps))
        alpha = self.alpha(num_steps) if callable(self.alpha) else self.alpha
        return ScaledResidualNet(layers, num_steps, alpha=alpha, beta=self.beta)


class HighwayFamily(eqx.Module):
    """`N -> HighwayNet(dim, N, gate_bias=..., key=fold_in(key, N))`."""

    dim: int = eqx.field(static=True)
    key: PRNGKeyArray
    gate_bias: float = eqx.field(static=True)

    def __call__(self, num_steps: int) -> HighwayNet:
        key = jr.fold_in(self.key, num_steps)
        return HighwayNet(self.dim, num_steps, gate_bias=self.gate_bias, key=key)


class UntiedFamily(eqx.Module):
    """`N -> EulerResNet(PiecewiseField(fields_at(N), horizon), N, horizon)`: a new
    field per block (or per piece), as in a standard untied ResNet."""

    fields_at: Callable = eqx.field(static=True)
    horizon: float = eqx.field(static=True)

    def __call__(self, num_steps: int) -> EulerResNet:
        field = PiecewiseField(list(self.fields_at(num_steps)), self.horizon)
        return EulerResNet(field, num_steps, self.horizon)


def euler(field: Callable, horizon: float) -> EulerFamily:
    """The Euler ResNets of one field at a fixed horizon: `N -> EulerResNet(field, N,
    horizon)`, step `h = T/N`. As `N -> inf` they converge (error `O(1/N)`) to the
    Neural ODE of the field, which is this family's `limit` (tight tolerances); its
    `bounds(N)` are Grönwall's `(1 + hL)^N`, `(1 - hL)^N` when the field has a finite
    Lipschitz bound `L` ([`contdepth.lipschitz_bound`][]).

    **Arguments:**

    - `field`: any vector field `f(t, y, args)`.
    - `horizon`: `T > 0`.

    **Returns:**

    A depth family: `family(N)` is an [`contdepth.EulerResNet`][].
    """
    horizon = check_positive_float("horizon", horizon)
    return EulerFamily(check_field("field", field), horizon)


def unscaled(field: Callable) -> UnscaledFamily:
    """The classic unscaled ResNets `y_{k+1} = y_k + F(t_k, y_k)` of one field:
    `N -> EulerResNet(field, N, horizon=N)` (`h = 1`; the horizon grows with `N`).

    **Arguments:**

    - `field`: any vector field `f(t, y, args)`.

    **Returns:**

    A depth family: `family(N)` is an [`contdepth.EulerResNet`][] with `h = 1`.
    """
    return UnscaledFamily(check_field("field", field))


def plain(dim: int, key: PRNGKeyArray) -> RandomStackFamily:
    """Random tanh stacks without skips, `y <- tanh(W_k y + b_k)` (a random
    [`contdepth.PlainNet`][], PyTorch default initialisation): `σ_min -> 0` with depth.
    Depth `N` draws its weights from `fold_in(key, N)`, layer by layer, so nothing of
    size `N` is stored.

    **Arguments:**

    - `dim`: the state size `d` (states are vectors `(d,)`).
    - `key`: PRNG key for the weights.

    **Returns:**

    A depth family of random stacks (with `traced_depth`: one compile for all `N`).
    """
    return RandomStackFamily(
        check_positive_int("dim", dim), check_key("key", key), "plain", "1"
    )


def random_branches(
    dim: int, key: PRNGKeyArray, scale: Literal["1/N", "1/sqrt(N)"] = "1/N"
) -> RandomStackFamily:
    """Depth-varying i.i.d. random residual branches, `y <- y + s f_k(y)` with
    `f_k(y) = V_k tanh(W_k y + b_k) + c_k`. `scale="1/N"` (ODE scaling) averages the
    branches out (`J -> I`); `"1/sqrt(N)"` (the SDE scaling of Marion et al. 2022 /
    Cohen et al. 2021) has a non-trivial random limit, still bounded.

    **Arguments:**

    - `dim`: the state size `d` (states are vectors `(d,)`).
    - `key`: PRNG key; depth `N` draws from `fold_in(key, N)`.
    - `scale`: `"1/N"` or `"1/sqrt(N)"`.

    **Returns:**

    A depth family of random stacks (with `traced_depth`: one compile for all `N`).
    """
    if scale not in ("1/N", "1/sqrt(N)"):
        raise ValueError(f"`scale` must be '1/N' or '1/sqrt(N)', got {scale!r}.")
    return RandomStackFamily(
        check_positive_int("dim", dim), check_key("key", key), "branch", scale
    )


def momentum(
    field: Callable, horizon: float, *, gamma: float, memory: Memory = "reversible"
) -> MomentumFamily:
    """Momentum ResNets of one field: `N -> MomentumResNet(field, N, horizon,
    gamma=gamma, memory=memory)`; `limit` is the Neural ODE `x' = F(t, x)`.

    **Arguments:** as [`contdepth.MomentumResNet`][], without `num_steps`.

    **Returns:**

    A depth family.
    """
    MomentumResNet(field, 1, horizon, gamma=gamma, memory=memory)  # checks arguments
    return MomentumFamily(field, float(horizon), float(gamma), memory)


def reversible(
    field_a: Callable,
    field_b: Callable,
    horizon: float,
    *,
    memory: Memory = "reversible",
) -> ReversibleFamily:
    """Reversible ResNets: `N -> ReversibleResNet(field_a, field_b, N, horizon,
    memory=memory)`; `limit` is the Neural ODE of `CoupledField(field_a, field_b)`
    (`y1' = F_a(t, y2)`, `y2' = F_b(t, y1)`).

    **Arguments:** as [`contdepth.ReversibleResNet`][], without `num_steps`.

    **Returns:**

    A depth family.
    """
    check_field("field_a", field_a)
    check_field("field_b", field_b)
    return ReversibleFamily(
        field_a, field_b, check_positive_float("horizon", horizon), check_memory(memory)
    )


def scaled_residual(
    field: Callable | None = None,
    *,
    fields: Callable | None = None,
    alpha: float | Literal["nonexpansive"] | Callable[[int], float],
    beta: float = 0.0,
) -> ScaledResidualFamily:
    """Scaled residual stacks `y_{l+1} = (1 - beta) y_l + alpha f_l(l, y_l)`:
    `N -> ScaledResidualNet(field_or_fields, N, alpha=alpha, beta=beta)`.

    **Arguments:**

    - `field`: one vector field (tied weights), or
    - `fields`: a function `N -> sequence of N fields` (one field per layer).
    - `alpha`: the branch scale: a number, `"nonexpansive"`, or a function `N -> alpha`
        (e.g. `lambda n: 1 / n`).
    - `beta`: the skip damping.

    **Returns:**

    A depth family: `family(N)` is a [`contdepth.ScaledResidualNet`][].
    """
    if (field is None) == (fields is None):
        raise ValueError(
            "Pass exactly one of `field` (tied weights) and `fields` (a function "
            "`N -> N fields`)."
        )
    if field is not None:
        check_field("field", field)
    else:
        check_callable("fields", fields)
    return ScaledResidualFamily(field, fields, alpha, float(beta))


def highway(dim: int, key: PRNGKeyArray, *, gate_bias: float = -2.0) -> HighwayFamily:
    """Random highway networks: `N -> HighwayNet(dim, N, gate_bias=gate_bias,
    key=fold_in(key, N))`.

    **Arguments:** as [`contdepth.HighwayNet`][], without `num_layers`.

    **Returns:**

    A depth family.
    """
    return HighwayFamily(
        check_positive_int("dim", dim), check_key("key", key), float(gate_bias)
    )


def untied(fields_at: Callable[[int], list], horizon: float) -> UntiedFamily:
    """Untied (depth-varying) Euler ResNets: `N -> EulerResNet(PiecewiseField(
    fields_at(N), horizon), N, horizon)`.

    **Arguments:**

    - `fields_at`: a function `N -> sequence of fields` (typically `N` of them, one
        per block; any number `M` of pieces splits `[0, T]` evenly).
    - `horizon`: `T > 0`.

    **Returns:**

    A depth family.
    """
    check_callable("fields_at", fields_at)
    return UntiedFamily(fields_at, check_positive_float("horizon", horizon))
