import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, State
from .._validation import check_key, check_positive_int
from ._common import check_model_and_state, flat_map, with_autodiff_mode


class FrobeniusEstimate(eqx.Module):
    """The result of [`contdepth.jacobian_frobenius`][].

    - `estimate`: the Hutchinson estimate of `||J||_F^2`, the mean of `||J z_i||^2`.
    - `standard_error`: its standard error, `std(||J z_i||^2) / sqrt(num_probes)`
        (sample standard deviation, `ddof=1`). For moderate `num_probes` the
        estimate is approximately normal (central limit theorem), so the exact value
        lies within three standard errors in about 99.7% of draws.
    - `num_probes`: the number of probe vectors used.
    """

    estimate: Float[Array, ""]
    standard_error: Float[Array, ""]
    num_probes: int = eqx.field(static=True)


def jacobian_frobenius(
    model,
    y: State,
    *,
    num_probes: int,
    key: PRNGKeyArray,
    args: Args = None,
) -> FrobeniusEstimate:
    """Hutchinson's stochastic estimate of the squared Frobenius norm `||J||_F^2 =
    sum_i sigma_i^2 = tr(J^T J)` of the Jacobian `J = d model(y) / dy`, from
    Jacobian-vector products only.

    For Rademacher probes `z` (independent entries `+-1`), `E[z z^T] = I`, so
    `E ||J z||^2 = E[z^T J^T J z] = tr(J^T J)`. Each probe costs one `jax.jvp`; the
    probes are `jax.vmap`-ed, so the forward pass is shared and nothing of size
    `d x d` is formed. Rademacher probes have the smallest variance among i.i.d.
    probes with unit covariance: `Var ||J z||^2 = 2 sum_{i != j} (J^T J)_{ij}^2`,
    which is zero when `J^T J` is diagonal.

    Reference: Hutchinson 1990, "A stochastic estimator of the trace of the influence
    matrix for Laplacian smoothing splines"; Avron & Toledo 2011, "Randomized
    algorithms for estimating the trace of an implicit symmetric positive
    semi-definite matrix".

    **Arguments:**

    - `model`: any callable `model(y, args) -> state` (the Jacobian need not be
        square).
    - `y`: the state at which to linearise (flattened to `d = prod(y.shape)`).
    - `num_probes`: the number of probe vectors, `>= 2` (two are needed for a
        standard error). All probes are evaluated at once: memory grows as
        `num_probes * d`.
    - `key`: PRNG key for the probes.
    - `args`: forwarded to the model.

    **Returns:**

    A [`contdepth.FrobeniusEstimate`][] with scalar `estimate` and `standard_error`.
    """
    check_model_and_state(model, y, args=args)
    check_key("key", key)
    num_probes = check_positive_int("num_probes", num_probes)
    if num_probes < 2:
        raise ValueError(
            f"`num_probes` must be >= 2 (a standard error needs at least two samples), "
            f"got num_probes={num_probes}."
        )
    return _estimate(with_autodiff_mode(model, "fwd"), y, args, key, num_probes)


@eqx.filter_jit
def _estimate(model, y, args, key, num_probes: int) -> FrobeniusEstimate:
    fn, y_flat, _ = flat_map(model, y, args)
    probes = jr.rademacher(key, (num_probes, y_flat.size), dtype=y_flat.dtype)

    def squared_norm(z):
        _, jz = jax.jvp(fn, (y_flat,), (z,))
        return jnp.sum(jz**2)

    samples = jax.vmap(squared_norm)(probes)
    return FrobeniusEstimate(
        estimate=jnp.mean(samples),
        standard_error=jnp.std(samples, ddof=1) / jnp.sqrt(num_probes),
        num_probes=num_probes,
    )
