"""Regularisers and Lipschitz control (issue 17, parts 1-2): RNODE kinetic and
Jacobian-Frobenius integrals against closed forms, Hutchinson unbiasedness, gradients
against finite differences, the matrix-free spectral-norm penalty against the dense
Jacobian, and spectrally normalised fields under adversarial ascent."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import contdepth as cd
from contdepth._control.penalties import lipschitz_penalty, spectral_norm_penalty
from contdepth._control.regularised_solve import (
    jacobian_frobenius_integral,
    kinetic_energy,
    regularised_solve,
)
from contdepth._control.spectral_norm import (
    nonexpansive_residual_net,
    SpectralNormMLPField,
)

from .helpers import ascend


def _linear(key, d=3, scale=0.6):
    k1, k2 = jr.split(key)
    return scale * jr.normal(k1, (d, d)), jr.normal(k2, (d,))


# --- Kinetic and Frobenius integrals against closed forms ----------------------------


def test_euler_sums_match_closed_form(getkey):
    A, y0 = _linear(getkey())
    N, T = 7, 1.3
    model = cd.EulerResNet(cd.LinearField(A), N, T)
    y_out, reg = regularised_solve(model, y0, exact=True)
    h, An, y, kin = T / N, np.asarray(A), np.asarray(y0), 0.0
    for _ in range(N):
        kin += h * np.sum((An @ y) ** 2)
        y = y + h * An @ y
    np.testing.assert_allclose(y_out, model(y0), rtol=1e-13)
    np.testing.assert_allclose(reg.kinetic, kin, rtol=1e-12)
    np.testing.assert_allclose(reg.frobenius, T * np.sum(An**2), rtol=1e-12)
    np.testing.assert_allclose(kinetic_energy(model, y0), kin, rtol=1e-12)


def test_neural_ode_integrals_match_quadrature(getkey):
    A, y0 = _linear(getkey())
    T = 1.5
    model = cd.NeuralODE(cd.LinearField(A), T, rtol=1e-11, atol=1e-13)
    y_out, reg = regularised_solve(model, y0, exact=True)
    # int_0^T ||A e^{At} y0||^2 dt by 30-point Gauss-Legendre (the integrand is entire).
    nodes, weights = np.polynomial.legendre.leggauss(30)
    ts, ws = T * (nodes + 1) / 2, T * weights / 2
    An, yn = np.asarray(A), np.asarray(y0)
    kin = sum(
        w * np.sum((An @ scipy.linalg.expm(An * t) @ yn) ** 2) for t, w in zip(ts, ws)
    )
    np.testing.assert_allclose(y_out, scipy.linalg.expm(An * T) @ yn, rtol=1e-8)
    np.testing.assert_allclose(reg.kinetic, kin, rtol=1e-8)
    np.testing.assert_allclose(reg.frobenius, T * np.sum(An**2), rtol=1e-8)
    # One Rademacher probe held for the whole solve (RNODE): exactly T ||A z||^2.
    key = getkey()
    z = jr.rademacher(key, (1, 3), dtype=y0.dtype)[0]
    frob = jacobian_frobenius_integral(model, y0, key=key)
    np.testing.assert_allclose(frob, T * np.sum((An @ np.asarray(z)) ** 2), rtol=1e-8)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe, getkey):
    field = cd.MLPField(4, 8, 1, key=getkey())
    model = cd.EulerResNet(field, 5, 1.0)
    estimates = jax.jit(jax.vmap(
        lambda k, y: jacobian_frobenius_integral(model, y, key=k, probe=probe),
        in_axes=(0, None),
    ))
    for _ in range(3):
        y0 = jr.normal(getkey(), (4,))
        exact = float(jacobian_frobenius_integral(model, y0, exact=True))
        samples = np.asarray(estimates(jr.split(getkey(), 400), y0))
        assert np.std(samples) > 0  # a real estimator, not the exact value
        stderr = np.std(samples, ddof=1) / np.sqrt(samples.size)
        assert abs(np.mean(samples) - exact) < 3 * stderr, (np.mean(samples), exact)


def test_gradients_match_finite_differences(getkey):
    A, y0 = _linear(getkey(), d=2)
    key = getkey()

    def loss(flat, kind):
        a = flat.reshape(2, 2)
        field = cd.LinearField(a)
        model = (
            cd.EulerResNet(field, 4, 1.0)
            if kind == "euler"
            else cd.NeuralODE(field, 1.0, rtol=1e-12, atol=1e-14)
        )
        y, reg = regularised_solve(model, y0, key=key)
        return jnp.sum(y**2) + 0.3 * reg.kinetic + 0.2 * reg.frobenius

    for kind in ("euler", "ode"):
        f = jax.jit(lambda x, kind=kind: loss(x, kind))
        grad = jax.grad(f)(A.ravel())
        assert np.all(np.isfinite(grad))
        basis, eps = np.eye(4), 1e-5
        x = A.ravel()
        fd = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in basis]
        np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_regulariser_errors(getkey):
    model = cd.EulerResNet(cd.MLPField(3, 4, 1, key=getkey()), 3, 1.0)
    y0 = jnp.ones(3)
    with pytest.raises(ValueError, match="key="):
        regularised_solve(model, y0)
    with pytest.raises(ValueError, match="nothing to compute"):
        regularised_solve(model, y0, kinetic=False, frobenius=False)
    with pytest.raises(ValueError, match="probe"):
        regularised_solve(model, y0, key=getkey(), probe="uniform")
    with pytest.raises(TypeError, match="NeuralODE"):
        regularised_solve(lambda y, a=None: y, y0, exact=True)
    with pytest.raises(ValueError, match="dim=3"):
        regularised_solve(model, jnp.ones(4), exact=True)


# --- Spectral-norm and Lipschitz penalties -------------------------------------------


def test_spectral_norm_penalty_matches_dense(getkey):
    model = cd.EulerResNet(cd.MLPField(5, 8, 1, key=getkey()), 4, 1.0)
    y0, key = jr.normal(getkey(), (5,)), getkey()
    value, grad = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda m: spectral_norm_penalty(m, y0, key=key)
    ))(model)
    dense_value, dense = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda m: jnp.linalg.norm(cd.jacobian(m, y0), 2)
    ))(model)
    np.testing.assert_allclose(value, dense_value, rtol=1e-10)
    assert eqx.tree_equal(grad, dense, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="num_iters"):
        spectral_norm_penalty(model, y0, key=key, num_iters=6)


def test_lipschitz_penalty_is_log_bound(getkey):
    field = cd.MLPField(3, 6, 2, key=getkey())
    np.testing.assert_allclose(
        lipschitz_penalty(cd.EulerResNet(field, 3, 1.0)),
        jnp.log(cd.lipschitz_bound(field)),
    )
    np.testing.assert_allclose(
        lipschitz_penalty(field, log=False), cd.lipschitz_bound(field)
    )
    grad = eqx.filter_jit(eqx.filter_grad(lipschitz_penalty))(field)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    net = cd.untied_resnet(getkey(), dim=3, hidden=5, num_layers=4, init="iid")
    per_layer = [jnp.log(cd.lipschitz_bound(net.layer(i))) for i in range(4)]
    np.testing.assert_allclose(lipschitz_penalty(net), sum(per_layer), rtol=1e-12)
    with pytest.raises(ValueError, match="finite Lipschitz bound"):
        lipschitz_penalty(cd.AttentionField(4, num_heads=2, key=getkey()))


# --- Spectrally normalised fields: the bound holds by construction -------------------


def _jacobian_norm(field, shape, t=0.5):
    def norm(y):
        return jnp.linalg.norm(jax.jacfwd(lambda z: field(t, z, None))(y), ord=2)

    return norm


_CASES = [
    (jax.nn.relu, False, 0.5),
    (jax.nn.silu, True, 2.0),
]


@pytest.mark.parametrize(
    "activation, time_dependent, bound", _CASES, ids=["relu", "silu-time"]
)
def test_spectral_norm_field_survives_adversarial_ascent(
    activation, time_dependent, bound, getkey
):
    fields = [
        SpectralNormMLPField(
            3, 6, 2, bound=bound, activation=activation,
            time_dependent=time_dependent, key=k,
        )
        for k in jr.split(getkey(), 2)
    ]
    for field in fields:
        assert float(field.lipschitz_bound()) <= bound
    static = eqx.partition(fields[0], eqx.is_inexact_array)[1]
    unravel = ravel_pytree(eqx.filter(fields[0], eqx.is_inexact_array))[1]

    # Jointly over the state AND the raw weights: the bound must hold for all weights.
    def objective(x):
        return _jacobian_norm(eqx.combine(unravel(x[3:]), static), (3,))(x[:3])

    # From both fields' weights (and perturbations of them), several states each.
    weights = jnp.stack([ravel_pytree(eqx.filter(f, eqx.is_inexact_array))[0]
                         for f in fields])
    weights = jnp.repeat(weights, 4, axis=0)
    weights = weights + jr.normal(getkey(), weights.shape) * jnp.repeat(
        jnp.array([0.0, 1.0, 1.0, 1.0] * 2), weights.shape[1]
    ).reshape(weights.shape)
    starts = jnp.concatenate([3 * jr.normal(getkey(), (8, 3)), weights], axis=1)
    found = ascend(objective, starts, steps=40)
    assert found <= bound * (1 + 1e-12), (found, bound)
    assert found >= 0.3 * bound  # the ascent is doing work


def test_nonexpansive_residual_net_on_spectral_fields(getkey):
    keys = jr.split(getkey(), 4)
    fields = [SpectralNormMLPField(3, 6, 1, bound=3.0, key=k) for k in keys]
    net = nonexpansive_residual_net(fields, 4, beta=0.5)
    np.testing.assert_allclose(net.alpha, 0.5 / 3.0)
    # Training moves the raw weights: scale them up 50x; still non-expansive.
    big = jax.tree.map(lambda w: 50.0 * w if eqx.is_inexact_array(w) else w, net)
    big = eqx.tree_at(lambda m: m.alpha, big, net.alpha)
    assert float(net.block_lipschitz_bound()) <= 1.0
    assert float(big.block_lipschitz_bound()) <= 1.0
    found = ascend(
        _jacobian_norm(lambda t, y, a: big(y), (3,)), 3 * jr.normal(getkey(), (4, 3)),
        steps=40,
    )
    assert found <= 1.0
    as_mlp = fields[0].as_mlp_field()
    y0 = jr.normal(getkey(), (3,))
    np.testing.assert_allclose(as_mlp(0.0, y0), fields[0](0.0, y0), rtol=1e-14)
    assert float(cd.lipschitz_bound(as_mlp)) <= 3.0
    with pytest.raises(TypeError, match="SpectralNormMLPField"):
        nonexpansive_residual_net(cd.MLPField(3, 4, 1, key=getkey()), 2)
    with pytest.raises(ValueError, match="beta"):
        nonexpansive_residual_net(fields, 4, beta=0.0)
    with pytest.raises(ValueError, match="bound"):
        SpectralNormMLPField(3, 4, 1, bound=-1.0, key=getkey())
