"""Continuous normalising flows: `log p(x)` through a `NeuralODE` by the instantaneous
change of variables, with the exact trace or Hutchinson's estimator, and sampling by
integrating the flow backwards.

References: Chen et al. 2018, "Neural Ordinary Differential Equations" (CNF);
Grathwohl et al. 2019, "FFJORD: Free-form continuous dynamics for scalable reversible
generative models" (Hutchinson's trace estimator); Finlay et al. 2020, "How to train
your neural ODE" (RNODE regularisers in the same solve).
"""

import math
from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._control.regularised_solve import _probes
from .._custom_types import Args, State
from .._fields.protocol import field_horizon, jump_times
from .._models.neural_ode import NeuralODE
from .._validation import (
    check_bool,
    check_float_array,
    check_key,
    check_positive_int,
)


Trace = Literal["exact", "hutchinson"]
Probe = Literal["rademacher", "gaussian"]


class CNFLogProb(eqx.Module):
    """What [`contdepth.cnf_log_prob`][] returns for one sample.

    - `log_prob`: `log p(x)`, a scalar (with Hutchinson, the mean of the per-probe
        estimates: unbiased).
    - `stderr`: the standard error of `log_prob` over the Hutchinson probes (their
        sample standard deviation over `sqrt(num_probes)`); `0` for the exact trace,
        NaN for a single probe.
    - `z`: the latent `z(T)`, shape of `x`.
    - `num_steps`: solver steps of the augmented solve, rejected ones included.
    - `num_evaluations`: field evaluations of the solve, `num_steps` times the
        solver's evaluations per step (first-same-as-last stages counted once; the
        two or three evaluations that pick the first step are not counted); `-1` if
        the solver has no Butcher tableau.
    - `kinetic`, `frobenius`: the RNODE integrals `int ||F||^2 dt` and
        `int ||J_F||_F^2 dt` along the same solve, or `None` if not requested.
    """

    log_prob: Float[Array, ""]
    stderr: Float[Array, ""]
    z: State
    num_steps: Int[Array, ""]
    num_evaluations: Int[Array, ""]
    kinetic: Float[Array, ""] | None
    frobenius: Float[Array, ""] | None


def evaluations_per_step(solver: diffrax.AbstractSolver) -> int | None:
    """Field evaluations per step of a Runge-Kutta `solver` (its stages, minus one if
    the last stage is reused as the next step's first); `None` if it has no Butcher
    tableau. `Dopri5` and `Tsit5`: 6."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        return None
    return int(tableau.num_stages) - int(bool(getattr(tableau, "fsal", False)))


class _Augmented(eqx.Module):
    """The CNF field on the flat state `[z, l_1..l_m, e_kin?, e_jac?]`: `(F,
    z_i^T J_F z_i, ||F||^2, w sum_i ||J_F z_i||^2)`. Exact trace: the probes are the
    basis and their quadratic forms are summed into one `l`. The probes are fixed for
    the whole solve. Forwards the field's `horizon` and `jump_times`."""

    field: Callable
    probes: Array
    weight: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    exact: bool = eqx.field(static=True)
    kinetic: bool = eqx.field(static=True)
    frobenius: bool = eqx.field(static=True)

    @property
    def horizon(self):
        return field_horizon(self.field)

    def jump_times(self, dtype):
        return jump_times(self.field, dtype)

    def __call__(self, t, s, args):
        size = math.prod(self.shape)
        y = jnp.reshape(s[:size], self.shape)
        f, lin = jax.linearize(lambda x: self.field(t, x, args), y)
        probes = lax.stop_gradient(self.probes)
        jz = jax.vmap(lin)(probes)
        axes = tuple(range(1, jz.ndim))
        quad = jnp.sum(probes * jz, axis=axes)
        parts = [jnp.sum(quad)[None] if self.exact else quad]
        if self.kinetic:
            parts.append(jnp.sum(f**2)[None])
        if self.frobenius:
            parts.append(self.weight * jnp.sum(jz**2)[None])
        parts = [jnp.reshape(f, (-1,))] + parts
        return jnp.concatenate([p.astype(s.dtype) for p in parts])


def _check_model(model) -> NeuralODE:
    if not isinstance(model, NeuralODE):
        raise TypeError(
            "`model` must be a `cd.NeuralODE` (the flow `x -> z(T)`), got "
            f"{type(model).__name__}. Build one with e.g. `cd.NeuralODE(cd.MLPField("
            "2, 64, 2, time_dependent=True, key=key), 1.0)`."
        )
    return model


def _standard_normal_log_density(z) -> Float[Array, ""]:
    return -0.5 * jnp.sum(z**2) - 0.5 * z.size * math.log(2 * math.pi)


def cnf_log_prob(
    model: NeuralODE,
    x: State,
    args: Args = None,
    *,
    trace: Trace = "exact",
    key: PRNGKeyArray | None = None,
    probe: Probe = "rademacher",
    num_probes: int = 1,
    kinetic: bool = False,
    frobenius: bool = False,
) -> CNFLogProb:
    """The log-density of `x` under the continuous normalising flow `model`: with
    `dz/dt = F(t, z)`, `z(0) = x` and a standard normal `z(T)`,

    `log p(x) = log N(z(T); 0, I) + int_0^T tr(dF/dz(t, z(t))) dt`,

    both terms from one solve of the augmented ODE `d/dt [z, l] = [F, tr J_F]` with
    the model's own solver, step-size controller, adjoint and `max_steps`.

    - `trace="exact"`: `tr J_F` from `d` Jacobian-vector products (the basis
        vectors; small states).
    - `trace="hutchinson"`: `tr J_F ~ eps^T J_F eps` with `num_probes` probes `eps`
        drawn once from `key` and kept for the whole solve (FFJORD); each probe gets
        its own integral, so `log_prob` is their mean and `stderr` their standard
        error. Unbiased: `E[eps eps^T] = I`.

    With `kinetic`/`frobenius`, the RNODE integrals `int ||F||^2 dt` and
    `int ||J_F||_F^2 dt` are added to the same solve (exact with the exact trace,
    from the same probes with Hutchinson), as in Finlay et al. 2020.

    Single sample: batch with `jax.vmap` (over `x` and `key`). Differentiable by
    `jax.grad` through the model's adjoint.

    References: Chen et al. 2018, "Neural Ordinary Differential Equations";
    Grathwohl et al. 2019, "FFJORD"; Finlay et al. 2020, "How to train your neural
    ODE".

    **Arguments:**

    - `model`: a `cd.NeuralODE`; its field maps states of `x`'s shape.
    - `x`: one data point (any shape; no batch axis).
    - `args`: forwarded to the field.
    - `trace`: `"exact"` (default) or `"hutchinson"`.
    - `key`: PRNG key for the Hutchinson probes (needed with `trace="hutchinson"`).
    - `probe`: `"rademacher"` (entries `+-1`; the smaller variance) or `"gaussian"`.
    - `num_probes`: Hutchinson probes (>= 2 for a standard error).
    - `kinetic`, `frobenius`: also integrate the RNODE regularisers.

    **Returns:**

    A [`contdepth.CNFLogProb`][]: `log_prob`, `stderr`, `z` (shape of `x`),
    `num_steps`, `num_evaluations`, `kinetic`, `frobenius`.
    """
    model = _check_model(model)
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"`trace` must be 'exact' or 'hutchinson', got {trace!r}.")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"`probe` must be 'rademacher' or 'gaussian', got {probe!r}.")
    num_probes = check_positive_int("num_probes", num_probes)
    kinetic = check_bool("kinetic", kinetic)
    frobenius = check_bool("frobenius", frobenius)
    exact = trace == "exact"
    if not exact:
        if key is None:
            raise ValueError(
                "`trace='hutchinson'` draws probes: pass `key=jax.random.PRNGKey(...)` "
                "(a fresh one per sample and step), or use `trace='exact'`."
            )
        check_key("key", key)
    check_float_array("x", x)
    model.check_state(x, args=args)
    probes, weight = _probes(key, num_probes, x.shape, x.dtype, probe, exact)
    num_traces = 1 if exact else num_probes
    field = _Augmented(
        model.field, probes, weight, tuple(x.shape), exact, kinetic, frobenius
    )
    num_extra = num_traces + int(kinetic) + int(frobenius)
    s0 = jnp.concatenate([jnp.reshape(x, (-1,)), jnp.zeros(num_extra, x.dtype)])
    sol = model.replace(field=field).solve(s0, args)
    assert sol.ys is not None  # saves t1
    s1 = sol.ys[-1]
    z = jnp.reshape(s1[: x.size], x.shape)
    tail = s1[x.size :]
    traces = tail[:num_traces]
    estimates = _standard_normal_log_density(z) + traces
    log_prob = jnp.mean(estimates)
    if exact:
        stderr = jnp.zeros((), x.dtype)
    elif num_traces == 1:
        stderr = jnp.full((), jnp.nan, x.dtype)
    else:
        stderr = jnp.std(estimates, ddof=1) / math.sqrt(num_traces)
    rest = list(tail[num_traces:])
    ekin = rest.pop(0) if kinetic else None
    ejac = rest.pop(0) if frobenius else None
    num_steps = sol.stats["num_steps"]
    per_step = evaluations_per_step(model.solver)
    nfe = jnp.full_like(num_steps, -1) if per_step is None else num_steps * per_step
    return CNFLogProb(log_prob, stderr, z, num_steps, nfe, ekin, ejac)


class _Reversed(eqx.Module):
    """`G(s, y) = -F(T - s, y)`: solving it over `[0, T]` runs the flow from `T` back
    to `0`."""

    field: Callable
    horizon: float = eqx.field(static=True)

    def jump_times(self, dtype):
        return tuple(sorted(self.horizon - t for t in jump_times(self.field, dtype)))

    def __call__(self, s, y, args):
        t = jnp.asarray(self.horizon, jnp.result_type(s)) - s
        return -self.field(t, y, args)


def cnf_inverse(model: NeuralODE, z: State, args: Args = None) -> State:
    """The flow's inverse: `x = z(0)` from `z(T) = z`, integrating `dz/dt = F` from
    `T` back to `0` with the model's own solver options.

    **Arguments:**

    - `model`: a `cd.NeuralODE`.
    - `z`: one latent state (no batch axis).
    - `args`: forwarded to the field.

    **Returns:**

    `x`, shape and dtype of `z`.
    """
    model = _check_model(model)
    check_float_array("z", z)
    return model.replace(field=_Reversed(model.field, model.horizon))(z, args)


def cnf_sample(
    model: NeuralODE,
    key: PRNGKeyArray,
    num: int,
    shape: tuple[int, ...] | None = None,
    args: Args = None,
    *,
    dtype=None,
) -> Float[Array, " num *shape"]:
    """`num` samples of the flow's density: `z ~ N(0, I)` pushed through
    [`contdepth.cnf_inverse`][] (batched by `jax.vmap`).

    **Arguments:**

    - `model`: a `cd.NeuralODE`.
    - `key`: a `jax.random.PRNGKey`.
    - `num`: number of samples.
    - `shape`: the shape of one sample; default `(model.field.dim,)` for fields with
        a `dim` (e.g. `cd.MLPField`).
    - `args`: forwarded to the field.
    - `dtype`: the samples' dtype; default JAX's default float.

    **Returns:**

    An array `(num, *shape)`.
    """
    model = _check_model(model)
    check_key("key", key)
    num = check_positive_int("num", num)
    if shape is None:
        dim = getattr(model.field, "dim", None)
        if not isinstance(dim, int):
            raise ValueError(
                f"the field {type(model.field).__name__} has no integer `dim`: pass "
                "`shape=` (the shape of one sample), e.g. `shape=(2,)`."
            )
        shape = (dim,)
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    z = jr.normal(key, (num, *shape), dtype=dtype)
    return _inverse_batch(model, z, args)


@eqx.filter_jit
def _inverse_batch(model, z, args):
    return jax.vmap(lambda zi: cnf_inverse(model, zi, args))(z)
