"""`cd.extreme_singular_values` iterates to a tolerance, or flags what did not
converge (issue "Trust", item 1): tested where Lanczos approximates (k << d, a
clustered bottom spectrum, against a dense SVD), in float32 and float64."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd
from contdepth._jacobian.extreme import _ROUNDOFF, default_rtol


DTYPES = [jnp.float32, jnp.float64]


def _linear(y, args):
    return args @ y


def _clustered(key, dtype, d=160):
    # sigma: a bottom cluster (relative gaps 2e-3 .. 1e-2), a bulk, a separated top.
    s = np.concatenate([
        [0.1, 0.1002, 0.1005, 0.101, 0.102],
        np.linspace(0.2, 1.0, d - 7),
        [1.6, 2.0],
    ])
    ku, kv = jr.split(key)
    u, _ = jnp.linalg.qr(jr.normal(ku, (d, d), jnp.float64))
    v, _ = jnp.linalg.qr(jr.normal(kv, (d, d), jnp.float64))
    return ((u * jnp.asarray(s)[None, :]) @ v.T).astype(dtype)


def _tolerance(values, top, dtype):
    # The documented test: tol_i = max(rtol theta_i, 100 eps theta_max).
    eps = np.finfo(np.dtype(dtype)).eps
    return np.maximum(default_rtol(dtype) * values, _ROUNDOFF * eps * top)


def _check_against_dense(ext, dense, dtype, k):
    dense = np.asarray(dense, np.float64)
    top, bottom = dense[:k], dense[::-1][:k]
    for got, exact in ((ext.largest, top), (ext.smallest, bottom)):
        got = np.asarray(got, np.float64)
        # Dense float32 SVD itself carries ~eps relative error: allow that on top.
        slack = 10 * np.finfo(np.dtype(dtype)).eps * dense[0]
        assert np.all(np.abs(got - exact) <= _tolerance(got, dense[0], dtype) + slack), (
            got, exact
        )
    assert bool(ext.converged)


@eqx.filter_jit
def _vmapped(a, y, keys, k):
    return jax.vmap(lambda key: cd.extreme_singular_values(_linear, y, k, key=key, args=a))(
        keys
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_clustered_bottom_matches_dense_over_keys(dtype, getkey):
    d, k = 160, 4
    a = _clustered(getkey(), dtype, d)
    y = jnp.zeros(d, dtype)
    dense = np.linalg.svd(np.asarray(a, np.float64), compute_uv=False)
    keys = jr.split(getkey(), 4)
    batch = _vmapped(a, y, keys, k)  # vmap: the loop runs until every key converged
    iters = np.asarray(batch.num_iters)
    assert np.all(iters < d), iters  # it approximates: stops well before d
    for i in range(len(keys)):
        _check_against_dense(jax.tree.map(lambda x: x[i], batch), dense, dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_defaults_on_the_benchmark_resnet(dtype):
    # benchmarks/spectra.py's case: 16 Euler steps of a width-256 tanh MLP field on
    # d = 1024, whose bottom-5 singular values lie within 1.5%. The former fixed 65
    # steps reported 0.5804 as the 3rd smallest (true 0.5711) in float64.
    d, k = 1024, 5
    kf, ky, kl = jr.split(jr.PRNGKey(30), 3)
    model = cd.EulerResNet(cd.MLPField(d, 256, 1, key=kf), 16, 1.0)
    model = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)
    y = jr.normal(ky, (d,), dtype)
    dense = np.asarray(eqx.filter_jit(cd.singular_values)(model, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        ext = cd.extreme_singular_values(model, y, k, key=kl)
    _check_against_dense(ext, dense, dtype, k)
    assert int(ext.num_iters) < d // 4


def test_warns_and_flags_when_max_iters_is_too_small(getkey):
    d, k = 160, 3
    a = _clustered(getkey(), jnp.float64, d)
    y = jnp.zeros(d)
    with pytest.warns(RuntimeWarning, match=r"max_iters=8.*smallest\[0\].*Raise `max_iters`"):
        ext = cd.extreme_singular_values(_linear, y, k, key=getkey(), max_iters=8, args=a)
    assert int(ext.num_iters) == 8
    assert not bool(ext.converged)
    assert not np.any(np.asarray(ext.smallest_converged))
    # Under jit the flags are data and nothing warns.
    jitted = eqx.filter_jit(
        lambda a, key: cd.extreme_singular_values(_linear, y, k, key=key, max_iters=8, args=a)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = jitted(a, getkey())
    assert not bool(inside.converged)


def test_jit_equals_eager_and_fixed_num_iters_still_works(getkey):
    d, k = 160, 3
    a = _clustered(getkey(), jnp.float64, d)
    y = jnp.zeros(d)
    key = getkey()
    eager = cd.extreme_singular_values(_linear, y, k, key=key, which="smallest", args=a)
    jitted = eqx.filter_jit(
        lambda a, key: cd.extreme_singular_values(
            _linear, y, k, key=key, which="smallest", args=a
        )
    )(a, key)
    assert eager.largest is None and eager.largest_converged is None
    np.testing.assert_allclose(jitted.smallest, eager.smallest, rtol=1e-12)
    assert int(jitted.num_iters) == int(eager.num_iters)
    fixed = cd.extreme_singular_values(_linear, y, k, key=key, num_iters=d, args=a)
    dense = np.linalg.svd(np.asarray(a), compute_uv=False)
    np.testing.assert_allclose(fixed.smallest, dense[::-1][:k], rtol=1e-10)
    assert int(fixed.num_iters) == d and bool(fixed.converged)
    with pytest.raises(ValueError, match="not both"):
        cd.extreme_singular_values(_linear, y, k, key=key, num_iters=20, max_iters=30, args=a)
    with pytest.raises(ValueError, match="max_iters"):
        cd.extreme_singular_values(_linear, y, k, key=key, max_iters=d + 1, args=a)
