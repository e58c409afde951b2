"""Small classification datasets that ship with contdepth's dependencies: no downloads.

Each function returns `(train, test)`, each a `(features, labels)` pair of arrays with
features of shape `(n, num_features)` (float32) and integer labels of shape `(n,)`.
[`contdepth.train`][] accepts any such pair, so your own data plugs in the same way.
"""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._optional import require
from ._validation import (
    check_key,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)


Split = tuple[Float[Array, "n features"], Int[Array, " n"]]

__all__ = ["digits", "two_moons", "spirals"]


def _check_fraction(test_fraction) -> float:
    test_fraction = check_positive_float("test_fraction", test_fraction)
    if not test_fraction < 1:
        raise ValueError(f"`test_fraction` must lie in (0, 1), got {test_fraction}.")
    return test_fraction


def _to_jax(x: np.ndarray, y: np.ndarray) -> Split:
    return jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.int32)


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Features are the 64 pixels, standardised with the *training* mean and standard
    deviation. The split is stratified and fixed by `seed`.

    **Returns:** `((x_train, y_train), (x_test, y_test))`; with the defaults 1347
    training and 450 test samples.
    """
    load_digits = require("sklearn.datasets", extra="datasets").load_digits
    train_test_split = require(
        "sklearn.model_selection", extra="datasets"
    ).train_test_split

    test_fraction = _check_fraction(test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"`seed` must be an int >= 0, got {seed!r}.")
    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data.astype(np.float64),
        data.target,
        test_size=test_fraction,
        random_state=seed,
        stratify=data.target,
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant (always-zero) border pixels
    return _to_jax((x_tr - mean) / std, y_tr), _to_jax((x_te - mean) / std, y_te)


def _split(x, y, key, test_fraction):
    n = x.shape[0]
    perm = jr.permutation(key, n)
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise ValueError(
            f"`test_fraction={test_fraction}` leaves no training sample out of n={n}: "
            "lower `test_fraction` or raise `n`."
        )
    te, tr = perm[:n_test], perm[n_test:]
    return (x[tr], y[tr]), (x[te], y[te])


def two_moons(
    n: int = 1000, noise: float = 0.1, *, key: PRNGKeyArray, test_fraction: float = 0.25
) -> tuple[Split, Split]:
    """Two interleaved half circles in 2-D, with Gaussian noise of std `noise`.

    **Returns:** `((x_train, y_train), (x_test, y_test))`, features of shape `(·, 2)`.
    """
    n = check_positive_int("n", n)
    noise = check_nonnegative_float("noise", noise)
    if n < 4:
        raise ValueError(f"`n` must be >= 4 for a train/test split, got {n}.")
    test_fraction = _check_fraction(test_fraction)
    k_angle, k_noise, k_split = jr.split(check_key("key", key), 3)
    labels = jnp.arange(n) % 2
    angle = jr.uniform(k_angle, (n,), minval=0.0, maxval=jnp.pi)
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    lower = jnp.stack([1 - jnp.cos(angle), 0.5 - jnp.sin(angle)], axis=1)
    x = jnp.where(labels[:, None] == 0, upper, lower)
    x = x + noise * jr.normal(k_noise, x.shape)
    return _split(
        x.astype(jnp.float32), labels.astype(jnp.int32), k_split, test_fraction
    )


def spirals(
    n: int = 1000,
    noise: float = 0.05,
    *,
    key: PRNGKeyArray,
    num_turns: float = 1.5,
    test_fraction: float = 0.25,
) -> tuple[Split, Split]:
    """Two interleaved Archimedean spirals in 2-D (a classic task that needs the flow to
    untangle the classes).

    **Returns:** `((x_train, y_train), (x_test, y_test))`, features of shape `(·, 2)`.
    """
    n = check_positive_int("n", n)
    noise = check_nonnegative_float("noise", noise)
    if n < 4:
        raise ValueError(f"`n` must be >= 4 for a train/test split, got {n}.")
    test_fraction = _check_fraction(test_fraction)
    num_turns = check_positive_float("num_turns", num_turns)
    k_r, k_noise, k_split = jr.split(check_key("key", key), 3)
    labels = jnp.arange(n) % 2
    r = jr.uniform(k_r, (n,), minval=0.05, maxval=1.0)
    theta = 2 * jnp.pi * num_turns * r + jnp.pi * labels
    x = jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], axis=1)
    x = x + noise * jr.normal(k_noise, x.shape)
    return _split(
        x.astype(jnp.float32), labels.astype(jnp.int32), k_split, test_fraction
    )
