"""RNODE-style regularisers computed along the forward pass: the kinetic energy
`int ||F||^2 dt` and the Jacobian Frobenius integral `int ||J_F||_F^2 dt`, returned
together with the output so that a loss pays for one solve.

Reference: Finlay, Jacobsen, Nurbekyan & Oberman 2020, "How to train your neural ODE:
the world of Jacobian and kinetic regularization" (ICML).
"""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, State
from .._fields.protocol import field_horizon, jump_times
from .._models.base import AbstractDiscreteDepthModel
from .._models.neural_ode import NeuralODE
from .._validation import check_bool, check_float_array, check_key, check_positive_int


Probe = Literal["rademacher", "gaussian"]


class Regularisers(eqx.Module):
    """The regularisers of [`contdepth.regularised_solve`][].

    - `kinetic`: `int_0^T ||F(t, y(t))||^2 dt` (a scalar), or `None` if not requested.
    - `frobenius`: `int_0^T ||J_F(t, y(t))||_F^2 dt` (a scalar; exact or a Hutchinson
        estimate), or `None` if not requested.

    For a discrete model these integrals are the sums over its steps defined in
    [`contdepth.regularised_solve`][].
    """

    kinetic: Float[Array, ""] | None
    frobenius: Float[Array, ""] | None


def _probes(key, num_probes: int, shape, dtype, probe: str, exact: bool):
    """`(z, weight)`: probe vectors `(num, *shape)` and the weight turning
    `sum_i ||J z_i||^2` into `||J||_F^2` (exact: the basis, weight 1; Hutchinson:
    `num_probes` i.i.d. probes with `E[z z^T] = I`, weight `1 / num_probes`)."""
    size = int(np.prod(shape))
    if exact:
        return jnp.eye(size, dtype=dtype).reshape(size, *shape), 1.0
    draw = jr.rademacher if probe == "rademacher" else jr.normal
    return draw(key, (num_probes, *shape), dtype=dtype), 1.0 / num_probes


class _Augmented(eqx.Module):
    """The RNODE augmented field on the flat state `[y, e_kin?, e_jac?]`:
    `(F, ||F||^2, weight sum_i ||J_F z_i||^2)`, with the same probes for the whole
    solve. Forwards the field's `jump_times` and `horizon`."""

    field: Callable
    probes: Array | None
    weight: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    kinetic: bool = eqx.field(static=True)

    @property
    def horizon(self):
        return field_horizon(self.field)

    def jump_times(self, dtype):
        return jump_times(self.field, dtype)

    def __call__(self, t, z, args):
        size = int(np.prod(self.shape))
        y = jnp.reshape(z[:size], self.shape)
        extra = []
        if self.probes is None:
            f = self.field(t, y, args)
        else:
            f, lin = jax.linearize(lambda x: self.field(t, x, args), y)
            jz = jax.vmap(lin)(lax.stop_gradient(self.probes))
            extra.append(self.weight * jnp.sum(jz**2))
        if self.kinetic:
            extra.insert(0, jnp.sum(f**2))
        tail = jnp.stack(extra).astype(z.dtype) if extra else jnp.zeros(0, z.dtype)
        return jnp.concatenate([jnp.reshape(f, (-1,)).astype(z.dtype), tail])


def _ode(model: NeuralODE, y, args, probes, weight, kinetic):
    field = _Augmented(model.field, probes, weight, tuple(y.shape), kinetic)
    num_extra = int(kinetic) + int(probes is not None)
    z0 = jnp.concatenate([jnp.reshape(y, (-1,)), jnp.zeros(num_extra, y.dtype)])
    z1 = model.replace(field=field)(z0, args)
    y_out = jnp.reshape(z1[: y.size], y.shape)
    tail = list(z1[y.size :])
    ekin = tail.pop(0) if kinetic else None
    ejac = tail.pop(0) if probes is not None else None
    return y_out, ekin, ejac


def _discrete(model: AbstractDiscreteDepthModel, y, args, probes, weight, kinetic):
    h = getattr(model, "step_size", None)
    h = 1.0 / model.num_layers if h is None else h

    def body(carry, k):
        y, ekin, ejac = carry

        def step(x):
            return model.step(k, x, args)

        if probes is None:
            y_next = step(y)
        else:
            y_next, lin = jax.linearize(step, y)
            # The increment's Jacobian is J_step - I.
            jz = jax.vmap(lin)(probes) - probes
            ejac = ejac + weight * jnp.sum(jz**2)
        if kinetic:
            ekin = ekin + jnp.sum((y_next - y) ** 2)
        return (y_next, ekin, ejac), None

    zero = jnp.zeros((), y.dtype)
    (y_out, ekin, ejac), _ = lax.scan(
        body, (y, zero, zero), jnp.arange(model.num_layers)
    )
    h = jnp.asarray(h, y.dtype)
    return (
        y_out,
        (ekin / h if kinetic else None),
        (ejac / h if probes is not None else None),
    )


def regularised_solve(
    model,
    y: State,
    args: Args = None,
    *,
    kinetic: bool = True,
    frobenius: bool = True,
    key: PRNGKeyArray | None = None,
    num_probes: int = 1,
    probe: Probe = "rademacher",
    exact: bool = False,
) -> tuple[State, Regularisers]:
    """The model's output and its kinetic-energy and Jacobian-Frobenius regularisers,
    from one forward pass, so that a loss reads

    ```python
    y_T, reg = cd.regularised_solve(model, y, key=key)
    loss = task(y_T) + lam_k * reg.kinetic + lam_j * reg.frobenius
    ```

    - [`contdepth.NeuralODE`][]: the ODE is augmented, as in RNODE (Finlay et al.
        2020), to `d/dt (y, e_kin, e_jac) = (F, ||F||^2, ||J_F z||^2)` and solved with
        the model's own solver, step-size controller, adjoint, event and `max_steps`;
        `kinetic = e_kin(T)`, `frobenius = e_jac(T)`. The same probes `z` serve the
        whole solve. The extra components are part of the state, so an adaptive
        controller also controls their error (the steps may differ slightly from
        `model(y)`'s). With an `event`, the integrals stop at the event time.
    - A discrete model (`cd.EulerResNet`, `cd.ScaledResidualNet`, an untied ResNet,
        any `AbstractDiscreteDepthModel`): with the increments `Delta_k = y_{k+1} -
        y_k` and step `h` (the model's `step_size`, else `1 / num_layers`),
        `kinetic = sum_k ||Delta_k||^2 / h` and `frobenius = sum_k ||d Delta_k /
        d y_k||_F^2 / h`. For `EulerResNet`, `Delta_k = h F(t_k, y_k)`, so these are
        `h sum_k ||F(t_k, y_k)||^2` and `h sum_k ||J_F(t_k, y_k)||_F^2`: the Riemann
        sums of the ODE integrals. (In float32 `Delta_k` loses about `eps / h` of
        relative accuracy to cancellation.)

    The Frobenius term is Hutchinson's estimate `mean_i ||J z_i||^2` (unbiased:
    `E[z z^T] = I`), one Jacobian-vector product per probe per evaluation, or with
    `exact=True` the exact `||J||_F^2` from `d` products (small `d` only).

    Single sample: batch with `jax.vmap` (over `y` and `key`). Differentiable by
    `jax.grad` (through the model's adjoint for a `NeuralODE`).

    References: Finlay et al. 2020, "How to train your neural ODE: the world of
    Jacobian and kinetic regularization"; Hutchinson 1990, "A stochastic estimator of
    the trace of the influence matrix for Laplacian smoothing splines".

    **Arguments:**

    - `model`: a `cd.NeuralODE` or a discrete depth model with `step(k, y, args)`.
    - `y`: the input state (any shape; no batch axis).
    - `args`: forwarded to the field.
    - `kinetic`, `frobenius`: which regularisers to compute (at least one).
    - `key`: PRNG key for the probes; needed for `frobenius` unless `exact`.
    - `num_probes`: Hutchinson probes per evaluation (default 1, as RNODE).
    - `probe`: `"rademacher"` (entries `+-1`, smallest variance) or `"gaussian"`.
    - `exact`: compute `||J_F||_F^2` exactly (`d = y.size` products per evaluation).

    **Returns:**

    `(y_out, Regularisers(kinetic, frobenius))`: the output (shape and dtype of `y`)
    and scalars (or `None` for those not requested).
    """
    kinetic = check_bool("kinetic", kinetic)
    frobenius = check_bool("frobenius", frobenius)
    exact = check_bool("exact", exact)
    num_probes = check_positive_int("num_probes", num_probes)
    if not (kinetic or frobenius):
        raise ValueError(
            "`kinetic=False` and `frobenius=False` leave nothing to compute: call "
            "`model(y, args)` instead, or request at least one regulariser."
        )
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"`probe` must be 'rademacher' or 'gaussian', got {probe!r}.")
    if frobenius and not exact:
        if key is None:
            raise ValueError(
                "`frobenius=True` draws Hutchinson probes: pass "
                "`key=jax.random.PRNGKey(...)` (a fresh one per training step), or "
                "`exact=True` for small states."
            )
        check_key("key", key)
    check_float_array("y", y)
    solve: Callable  # `_ode` or `_discrete`, each for its own kind of model
    if isinstance(model, NeuralODE):
        solve = _ode
    elif isinstance(model, AbstractDiscreteDepthModel):
        solve = _discrete
    else:
        raise TypeError(
            "`model` must be a `cd.NeuralODE` or a discrete depth model with "
            "`step(k, y, args)` (e.g. `cd.EulerResNet`, `cd.ScaledResidualNet`), got "
            f"{type(model).__name__}."
        )
    model.check_state(y, args=args)
    probes, weight = (None, 1.0)
    if frobenius:
        probes, weight = _probes(key, num_probes, y.shape, y.dtype, probe, exact)
    y_out, ekin, ejac = solve(model, y, args, probes, weight, kinetic)
    return y_out, Regularisers(kinetic=ekin, frobenius=ejac)


def kinetic_energy(model, y: State, args: Args = None) -> Float[Array, ""]:
    """The kinetic energy `int_0^T ||F(t, y(t))||^2 dt` of the forward pass (for a
    discrete model `sum_k ||y_{k+1} - y_k||^2 / h`). Use
    [`contdepth.regularised_solve`][] to get the output from the same solve.

    Reference: Finlay et al. 2020, "How to train your neural ODE".

    **Arguments:** as [`contdepth.regularised_solve`][].

    **Returns:** a scalar.
    """
    _, reg = regularised_solve(model, y, args, kinetic=True, frobenius=False)
    assert reg.kinetic is not None  # requested
    return reg.kinetic


def jacobian_frobenius_integral(
    model,
    y: State,
    args: Args = None,
    *,
    key: PRNGKeyArray | None = None,
    num_probes: int = 1,
    probe: Probe = "rademacher",
    exact: bool = False,
) -> Float[Array, ""]:
    """The Jacobian regulariser `int_0^T ||J_F(t, y(t))||_F^2 dt` of the forward pass
    (for a discrete model `sum_k ||d(y_{k+1} - y_k)/d y_k||_F^2 / h`): Hutchinson's
    unbiased estimate, or exact with `exact=True`. Use
    [`contdepth.regularised_solve`][] to get the output from the same solve.

    Reference: Finlay et al. 2020, "How to train your neural ODE".

    **Arguments:** as [`contdepth.regularised_solve`][].

    **Returns:** a scalar.
    """
    _, reg = regularised_solve(
        model,
        y,
        args,
        kinetic=False,
        frobenius=True,
        key=key,
        num_probes=num_probes,
        probe=probe,
        exact=exact,
    )
    assert reg.frobenius is not None  # requested
    return reg.frobenius
