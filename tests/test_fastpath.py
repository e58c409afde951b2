"""The fused batched Euler-MLP path equals `jax.vmap(model)`, values and gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd
from contdepth._fastpath.batched import _euler_mlp_config, batched_apply

from .helpers import central_difference_grad


def _loss(apply):
    def loss(model, ys):
        return jnp.sum(jnp.sin(apply(model, ys)) * jnp.arange(ys.size).reshape(ys.shape))

    return loss


_VMAP = _loss(lambda m, ys: jax.vmap(m)(ys))
_FAST = _loss(batched_apply)


@pytest.mark.parametrize(
    "time_dependent, activation, depth",
    [(False, jax.nn.tanh, 2), (True, jax.nn.softplus, 3)],
)
def test_fast_path_equals_vmap(time_dependent, activation, depth, getkey):
    field = cd.MLPField(5, 7, depth, activation=activation, time_dependent=time_dependent,
                        key=getkey())
    model = cd.EulerResNet(field, 9, 1.3)
    ys = jr.normal(getkey(), (4, 5))
    assert _euler_mlp_config(model, ys, None) is not None  # really the fused path
    np.testing.assert_allclose(batched_apply(model, ys), jax.vmap(model)(ys), rtol=0, atol=1e-12)
    g_vmap = eqx.filter_grad(_VMAP)(model, ys)
    g_fast = eqx.filter_grad(_FAST)(model, ys)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_vmap), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    gy_vmap = jax.grad(_VMAP, argnums=1)(model, ys)
    gy_fast = jax.grad(_FAST, argnums=1)(model, ys)
    np.testing.assert_allclose(gy_fast, gy_vmap, rtol=0, atol=1e-12)


def test_fast_path_gradient_matches_finite_differences(getkey):
    field = cd.MLPField(3, 4, 1, key=getkey())
    model = cd.EulerResNet(field, 5, 1.0)
    ys = jr.normal(getkey(), (2, 3))
    grad = jax.grad(lambda y: _FAST(model, y))(ys).reshape(-1)
    fd = central_difference_grad(lambda y: _FAST(model, y.reshape(ys.shape)), ys.reshape(-1))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_fast_path_under_jit_and_float32(getkey):
    field = cd.MLPField(6, 8, 2, key=getkey())
    f32 = jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, field)
    model = cd.EulerResNet(f32, 7, 1.0)
    ys = jr.normal(getkey(), (3, 6), jnp.float32)
    out = eqx.filter_jit(batched_apply)(model, ys)
    assert out.dtype == jnp.float32 and out.shape == ys.shape
    np.testing.assert_allclose(out, jax.vmap(model)(ys), rtol=1e-5, atol=1e-6)


def test_other_models_fall_back_to_vmap(getkey):
    linear = cd.LinearField(jr.normal(getkey(), (3, 3)) * 0.1)
    model = cd.EulerResNet(linear, 4, 1.0)
    ys = jr.normal(getkey(), (2, 3))
    assert _euler_mlp_config(model, ys, None) is None
    np.testing.assert_allclose(batched_apply(model, ys), jax.vmap(model)(ys), rtol=0, atol=0)
    mlp_model = cd.EulerResNet(cd.MLPField(3, 4, 1, key=getkey()), 4, 1.0)
    # Mixed dtypes take the generic path too.
    assert _euler_mlp_config(mlp_model, ys.astype(jnp.float32), None) is None


def test_fast_path_rejects_bad_state_shape(getkey):
    model = cd.EulerResNet(cd.MLPField(3, 4, 1, key=getkey()), 4, 1.0)
    with pytest.raises(ValueError):
        batched_apply(model, jnp.ones((2, 5)))


def _uses_fused(fn, *args) -> bool:
    return "custom_vjp" in str(eqx.filter_make_jaxpr(fn)(*args)[0])


def test_path_is_chosen_per_backend(getkey, monkeypatch):
    """`path="auto"` fuses only on backends where fusing is measured faster (the CPU);
    elsewhere, and with `path="vmap"`, it is `jax.vmap(model)`."""
    from contdepth._fastpath import batched

    model = cd.EulerResNet(cd.MLPField(5, 7, 2, key=getkey()), 4, 1.0)
    ys = jr.normal(getkey(), (3, 5))
    assert jax.default_backend() == "cpu"
    assert _uses_fused(batched_apply, model, ys)
    assert not _uses_fused(lambda m, y: batched_apply(m, y, path="vmap"), model, ys)
    monkeypatch.setattr(batched, "FUSED_BACKENDS", frozenset({"tpu"}))
    assert not _uses_fused(batched_apply, model, ys)  # as on a GPU
    assert _uses_fused(lambda m, y: batched_apply(m, y, path="fused"), model, ys)
    with pytest.raises(ValueError, match="no fused implementation"):
        batched_apply(cd.NeuralODE(model.field, 1.0), ys, path="fused")
    with pytest.raises(ValueError, match="`path`"):
        batched_apply(model, ys, path="fast")


def test_classifier_body_takes_the_fused_path(getkey):
    clf = cd.make_classifier("euler", num_features=6, num_classes=3, dim=5, width=7,
                             depth=4, key=getkey())
    clf = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a,
                       clf)
    xs = jr.normal(getkey(), (4, 6))
    assert _uses_fused(batched_apply, clf, xs)
    np.testing.assert_allclose(batched_apply(clf, xs), jax.vmap(clf)(xs), rtol=0, atol=1e-12)
    weights = jnp.arange(12.0).reshape(4, 3)

    def loss(apply):
        return lambda m, x: jnp.sum(jnp.sin(apply(m, x)) * weights)

    g_fast = eqx.filter_grad(loss(batched_apply))(clf, xs)
    g_vmap = eqx.filter_grad(loss(lambda m, x: jax.vmap(m)(x)))(clf, xs)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_vmap), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
