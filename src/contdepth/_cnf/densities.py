"""Two-dimensional toy densities for continuous normalising flows, as in FFJORD's
`toy_data.py` (Grathwohl et al. 2019) and RNODE (Finlay et al. 2020)."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import datasets
from .._validation import check_key, check_positive_int


def eight_gaussians(n: int, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """`n` points from an equal mixture of eight Gaussians with standard deviation
    `0.5 / sqrt(2)` centred on the circle of radius `4 / sqrt(2)` at angles
    `k pi / 4` (FFJORD's `8gaussians`).

    **Arguments:**

    - `n`: number of points.
    - `key`: a `jax.random.PRNGKey`.

    **Returns:** a float32 array `(n, 2)`.
    """
    return _eight_gaussians(check_positive_int("n", n), check_key("key", key))


@functools.partial(jax.jit, static_argnums=0)
def _eight_gaussians(n, key):
    k_mode, k_noise = jr.split(key)
    angle = jr.randint(k_mode, (n,), 0, 8) * (jnp.pi / 4)
    centres = 4.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    points = (centres + 0.5 * jr.normal(k_noise, (n, 2))) / jnp.sqrt(2.0)
    return points.astype(jnp.float32)


def checkerboard(n: int, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """`n` points uniform on the eight dark squares of a 4 x 4 checkerboard of side
    8 centred at the origin (FFJORD's `checkerboard`).

    **Arguments:**

    - `n`: number of points.
    - `key`: a `jax.random.PRNGKey`.

    **Returns:** a float32 array `(n, 2)`.
    """
    return _checkerboard(check_positive_int("n", n), check_key("key", key))


@functools.partial(jax.jit, static_argnums=0)
def _checkerboard(n, key):
    k1, k2, k3 = jr.split(key, 3)
    x1 = jr.uniform(k1, (n,), minval=-2.0, maxval=2.0)
    x2 = jr.uniform(k2, (n,)) - 2.0 * jr.randint(k3, (n,), 0, 2)
    x2 = x2 + jnp.floor(x1) % 2
    return (2.0 * jnp.stack([x1, x2], axis=1)).astype(jnp.float32)


def two_moons(n: int, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """`n` points of [`contdepth.datasets.two_moons`][] (noise `0.1`), centred and
    scaled by 2 so that they span about `[-3, 3] x [-1.5, 1.5]`.

    **Arguments:**

    - `n`: number of points (>= 4).
    - `key`: a `jax.random.PRNGKey`.

    **Returns:** a float32 array `(n, 2)`.
    """
    return _two_moons(check_positive_int("n", n), check_key("key", key))


@functools.partial(jax.jit, static_argnums=0)
def _two_moons(n, key):
    (x_train, _), (x_test, _) = datasets.two_moons(n, 0.1, key=key)
    x = jnp.concatenate([x_train, x_test])
    return (2.0 * (x - jnp.asarray([[0.5, 0.25]], x.dtype))).astype(jnp.float32)


DENSITIES: dict[str, Callable[[int, PRNGKeyArray], Array]] = {
    "eight-gaussians": eight_gaussians,
    "two-moons": two_moons,
    "checkerboard": checkerboard,
}


def sample_density(name: str, n: int, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """`n` points of the toy density `name`, one of `DENSITIES`
    (`"eight-gaussians"`, `"two-moons"`, `"checkerboard"`)."""
    if name not in DENSITIES:
        raise ValueError(f"`density` must be one of {sorted(DENSITIES)}, got {name!r}.")
    return DENSITIES[name](n, key)
