import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.linalg import expm

import contdepth as cd
from contdepth._cnf.densities import checkerboard, eight_gaussians, sample_density
from contdepth._cnf.flow import (
    cnf_log_prob,
    cnf_sample,
    evaluations_per_step,
)


A = jnp.array([[-0.3, 0.8], [-0.5, 0.2]])
# One field structure, one tolerance and few batch shapes throughout, so that the
# compiled solves are shared between tests (compilation dominates their cost).
RTOL, ATOL = 1e-8, 1e-10


def _mlp_flow(key):
    field = cd.MLPField(2, 8, 1, time_dependent=True, key=key)
    return cd.NeuralODE(field, 1.0, rtol=RTOL, atol=ATOL)


@eqx.filter_jit
def _exact(model, xs):
    return jax.vmap(lambda x: cnf_log_prob(model, x))(xs)


@eqx.filter_jit
def _hutchinson(model, xs, keys, probe, num_probes):
    def one(x, k):
        return cnf_log_prob(
            model, x, trace="hutchinson", key=k, probe=probe, num_probes=num_probes
        )

    return jax.vmap(lambda x, ks: jax.vmap(lambda k: one(x, k))(ks))(xs, keys)


def test_exact_log_prob_linear_closed_form(getkey):
    # F = A z: z(T) = e^{AT} x, log p(x) = log N(e^{AT} x) + T tr(A), and the RNODE
    # integrals are int_0^T |A e^{At} x|^2 dt and T |A|_F^2.
    horizon = 0.7
    model = cd.NeuralODE(cd.LinearField(A), horizon, rtol=RTOL, atol=ATOL)
    xs = jr.normal(getkey(), (5, 2))
    out = eqx.filter_jit(
        jax.vmap(
            lambda m, x: cnf_log_prob(m, x, kinetic=True, frobenius=True),
            in_axes=(None, 0),
        )
    )(model, xs)
    z = xs @ expm(horizon * np.asarray(A)).T
    expected = -0.5 * jnp.sum(z**2, 1) - math.log(2 * math.pi) + horizon * jnp.trace(A)
    np.testing.assert_allclose(out.log_prob, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(out.z, z, rtol=0, atol=1e-7)
    assert np.all(np.asarray(out.stderr) == 0)
    np.testing.assert_allclose(out.frobenius, horizon * jnp.sum(A**2), rtol=1e-7)
    ts = np.linspace(0.0, horizon, 21)
    flows = np.stack([expm(t * np.asarray(A)) for t in ts])
    speed = np.einsum("ij,tjk,nk->nti", np.asarray(A), flows, np.asarray(xs))
    # Simpson on 21 nodes of a smooth integrand: error far below the tolerance.
    h = ts[1] - ts[0]
    w = np.ones(21)
    w[1:-1:2], w[2:-1:2] = 4, 2
    kinetic = h / 3 * np.einsum("t,nt->n", w, np.sum(speed**2, -1))
    np.testing.assert_allclose(out.kinetic, kinetic, rtol=1e-6)
    # The default solver, Tsit5, evaluates the field 6 times per step.
    np.testing.assert_array_equal(out.num_evaluations, 6 * out.num_steps)


def test_change_of_variables_integrates_to_one(getkey):
    field = cd.MLPField(2, 8, 1, time_dependent=True, key=getkey())
    model = cd.NeuralODE(field, 1.0, rtol=1e-6, atol=1e-8)
    lim, n = 6.0, 24
    axis = jnp.linspace(-lim, lim, n)
    points = jnp.stack(jnp.meshgrid(axis, axis), -1).reshape(-1, 2)
    log_p = _exact(model, points).log_prob
    mass = float(jnp.sum(jnp.exp(log_p)) * (axis[1] - axis[0]) ** 2)
    assert abs(mass - 1.0) < 1e-5, mass
    # The flow is not the identity: p differs from the base density.
    base = -0.5 * jnp.sum(points**2, 1) - math.log(2 * math.pi)
    assert float(jnp.max(jnp.abs(log_p - base))) > 0.05


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_with_calibrated_stderr(getkey, probe):
    model = _mlp_flow(getkey())
    xs = 1.5 * jr.normal(getkey(), (5, 2))  # the shape the other tests compile
    exact = _exact(model, xs)
    num_points, num_calls = 3, 200
    keys = jr.split(getkey(), (num_points, num_calls))
    est = _hutchinson(model, xs[:num_points], keys, probe, 4)
    values, stderr = np.asarray(est.log_prob), np.asarray(est.stderr)
    # The estimator is random (the test can fail); with Rademacher probes in 2-D,
    # `eps^T J eps` takes two values, so 4 probes sometimes agree exactly.
    assert np.mean(stderr > 0) > 0.5
    for i in range(num_points):
        reference = float(exact.log_prob[i])
        se = values[i].std(ddof=1) / math.sqrt(num_calls)
        assert abs(values[i].mean() - reference) < 3 * se, (i, reference, se)
        # Each call's s.e. over its 4 probes estimates the spread across calls.
        ratio = values[i].std(ddof=1) / np.sqrt(np.mean(stderr[i] ** 2))
        assert 0.75 < ratio < 1.33, ratio
    # The probes are fixed within a solve and do not move the latent state.
    np.testing.assert_allclose(est.z[:, 0], exact.z[:num_points], rtol=0, atol=1e-6)


def test_sampling_inverts_the_flow(getkey):
    model = _mlp_flow(getkey())
    key = getkey()
    samples = cnf_sample(model, key, 5)
    assert samples.shape == (5, 2)
    z = jr.normal(key, (5, 2), dtype=samples.dtype)
    assert float(jnp.max(jnp.abs(samples - z))) > 0.05  # a non-trivial flow
    # z -> x = sample -> z: each sample maps forward to the draw it came from.
    np.testing.assert_allclose(_exact(model, samples).z, z, rtol=0, atol=1e-6)


def test_evaluations_per_step():
    assert evaluations_per_step(diffrax.Dopri5()) == 6
    assert evaluations_per_step(diffrax.Tsit5()) == 6
    assert evaluations_per_step(diffrax.Heun()) == 2
    assert evaluations_per_step(diffrax.Euler()) is None


def test_errors(getkey):
    model = cd.NeuralODE(cd.LinearField(A), 1.0)
    x = jnp.ones(2)
    with pytest.raises(TypeError, match="cd.NeuralODE"):
        cnf_log_prob(cd.EulerResNet(cd.LinearField(A), 4, 1.0), x)
    with pytest.raises(ValueError, match="key="):
        cnf_log_prob(model, x, trace="hutchinson")
    with pytest.raises(ValueError, match="'exact' or 'hutchinson'"):
        cnf_log_prob(model, x, trace="jacobian")
    with pytest.raises(ValueError, match="'rademacher' or 'gaussian'"):
        cnf_log_prob(model, x, trace="hutchinson", key=getkey(), probe="normal")
    with pytest.raises(ValueError, match="shape="):
        cnf_sample(model.replace(field=lambda t, y, args: -y), getkey(), 3)
    with pytest.raises(ValueError, match="density"):
        sample_density("spiral", 10, getkey())


def test_densities(getkey):
    x = eight_gaussians(4000, getkey())
    assert x.shape == (4000, 2) and x.dtype == jnp.float32
    x = np.asarray(x)
    radius = np.linalg.norm(x, axis=1)
    assert abs(np.median(radius) - 4 / math.sqrt(2)) < 0.1
    angle = np.round(np.arctan2(x[:, 1], x[:, 0]) / (np.pi / 4)) % 8
    assert np.all(np.bincount(angle.astype(int), minlength=8) > 400)
    c = np.asarray(checkerboard(4000, getkey()))
    assert c.shape == (4000, 2) and np.all(np.abs(c) <= 4)
    cells = np.floor(c / 2).astype(int)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)  # only the dark squares
    assert len({tuple(v) for v in cells}) == 8
    m = np.asarray(sample_density("two-moons", 1000, getkey()))
    assert m.shape == (1000, 2) and np.abs(m.mean(0)).max() < 0.2
