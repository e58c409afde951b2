"""Acceptance 1-4 of the foundation: Euler is Euler, linear truth, depth as time,
gradients are right."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import contdepth as cd

from .helpers import (
    central_difference_grad,
    FIELD_KINDS,
    make_field,
    make_model,
    max_rel_err,
    MODEL_KINDS,
)


@pytest.mark.filterwarnings("ignore::contdepth.StepStraddlesJumpWarning")  # 1, 7 steps
@pytest.mark.parametrize("kind", FIELD_KINDS)
@pytest.mark.parametrize("num_steps", [1, 7, 16])
def test_euler_is_diffrax_euler(kind, num_steps, getkey):
    field, y = make_field(kind, getkey())
    horizon = 1.0
    model = cd.EulerResNet(field, num_steps, horizon)
    ours = eqx.filter_jit(model)(y)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Euler(), 0.0, horizon, horizon / num_steps, y
    )
    assert ours.shape == y.shape and ours.dtype == y.dtype
    np.testing.assert_allclose(ours, sol.ys[-1], rtol=0, atol=1e-12)


def test_piecewise_pieces_act_on_their_intervals(getkey):
    fields = [cd.LinearField(jnp.eye(2) * (i + 1.0)) for i in range(4)]
    pw = cd.PiecewiseField(fields, horizon=2.0)
    for t, expected in [(0.0, 0), (0.49, 0), (0.5, 1), (1.2, 2), (1.999, 3), (2.0, 3)]:
        assert int(pw.piece_index(t)) == expected
    # With N = M the Euler ResNet is the untied ResNet y <- y + h A_i y.
    y = jr.normal(getkey(), (2,))
    h = 0.5
    expected = y
    for i in range(4):
        expected = expected + h * (i + 1.0) * expected
    np.testing.assert_allclose(cd.EulerResNet(pw, 4, 2.0)(y), expected, atol=1e-12)
    # With N = 3M each piece is applied three times with step h/3.
    expected = y
    for i in range(4):
        for _ in range(3):
            expected = expected + (h / 3) * (i + 1.0) * expected
    np.testing.assert_allclose(cd.EulerResNet(pw, 12, 2.0)(y), expected, atol=1e-12)


def test_trajectory_and_step_size(getkey):
    field, y = make_field("mlp_time", getkey())
    model = cd.EulerResNet(field, 5, 2.0)
    assert model.step_size == pytest.approx(0.4)
    traj = model.trajectory(y)
    assert traj.shape == (6, 3)
    np.testing.assert_allclose(traj[0], y)
    np.testing.assert_allclose(traj[-1], model(y), atol=1e-14)
    manual = y
    for k in range(5):
        manual = manual + 0.4 * field(0.4 * k, manual, None)
        np.testing.assert_allclose(traj[k + 1], manual, atol=1e-13)


def test_linear_truth(getkey):
    A = 0.7 * jr.normal(getkey(), (4, 4))
    y = jr.normal(getkey(), (4,))
    field = cd.LinearField(A)
    T, N = 1.5, 37
    h = T / N
    euler = cd.EulerResNet(field, N, T)(y)
    exact_euler = np.linalg.matrix_power(np.eye(4) + h * np.asarray(A), N) @ np.asarray(y)
    np.testing.assert_allclose(euler, exact_euler, rtol=0, atol=1e-12)
    ode = cd.NeuralODE(field, T, rtol=1e-10, atol=1e-10)(y)
    flow = scipy.linalg.expm(T * np.asarray(A)) @ np.asarray(y)
    np.testing.assert_allclose(ode, flow, rtol=0, atol=1e-6)


def test_neural_ode_solution_and_trajectory(getkey):
    field, y = make_field("mlp", getkey())
    ode = cd.NeuralODE(field, 1.0)
    sol = ode.solve(y)
    assert int(sol.stats["num_steps"]) > 0
    np.testing.assert_allclose(sol.ys[-1], ode(y))
    ts = jnp.linspace(0.0, 1.0, 5)
    traj = ode.trajectory(y, ts)
    assert traj.shape == (5, 3)
    np.testing.assert_allclose(traj[0], y, atol=1e-12)
    np.testing.assert_allclose(traj[-1], ode(y), atol=1e-6)
    # A fixed-step solver needs dt0; with Euler it reproduces the Euler ResNet.
    fixed = cd.NeuralODE(field, 1.0, solver=diffrax.Euler(), dt0=0.125)
    np.testing.assert_allclose(fixed(y), cd.EulerResNet(field, 8, 1.0)(y), atol=1e-12)


def test_depth_as_time_first_order(getkey):
    field = cd.MLPField(3, 16, 2, key=getkey())
    y = jr.normal(getkey(), (3,))
    T = 1.0
    reference = cd.NeuralODE(
        field, T, solver=diffrax.Dopri8(), rtol=1e-13, atol=1e-13
    )(y)
    ns = np.array([8, 16, 32, 64, 128, 256, 512])

    @eqx.filter_jit
    def run(model):
        return model(y)

    errors = np.array(
        [float(jnp.linalg.norm(run(cd.EulerResNet(field, int(n), T)) - reference)) for n in ns]
    )
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert -1.1 <= slope <= -0.9, (slope, errors)
    assert np.all(np.diff(errors) < 0)


def _loss(model, y):
    return jnp.sum(jnp.sin(model(y)) ** 2)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_gradients_match_finite_differences(kind, getkey):
    model, y = make_model(kind, getkey())
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def loss_of_params(p):
        return _loss(eqx.combine(unravel(p), static), y)

    grad = jax.grad(loss_of_params)(flat)
    fd = jax.jit(lambda p: central_difference_grad(loss_of_params, p))(flat)
    assert max_rel_err(grad, fd) < 1e-6

    grad_y = jax.grad(lambda y_: _loss(model, y_))(y)
    fd_y = central_difference_grad(lambda y_: _loss(model, y_), y)
    assert max_rel_err(grad_y, fd_y) < 1e-6


@pytest.mark.filterwarnings("ignore::contdepth.StepStraddlesJumpWarning")  # 3 steps
@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_models_vmap_and_jit(kind, getkey):
    field, y = make_field(kind, getkey())
    model = cd.EulerResNet(field, 3, 1.0)
    batch = jnp.stack([y, 2 * y, -y])
    out = eqx.filter_jit(jax.vmap(model))(batch)
    np.testing.assert_allclose(out[1], model(2 * y), atol=1e-12)


def test_lipschitz_bounds_hold(getkey):
    for kind in ("mlp", "mlp_time", "linear", "conv", "piecewise"):
        field, y = make_field(kind, getkey())
        lip = float(field.lipschitz_bound())
        for _ in range(5):
            z = y + 0.3 * jr.normal(getkey(), y.shape)
            t = float(jr.uniform(getkey()))
            lhs = jnp.linalg.norm(field(t, y, None) - field(t, z, None))
            assert lhs <= lip * jnp.linalg.norm(y - z) * (1 + 1e-12)
    field, _ = make_field("attention", getkey())
    assert jnp.isinf(field.lipschitz_bound())


def test_scaled_residual_nonexpansive(getkey):
    fields = [cd.MLPField(3, 8, 1, key=k) for k in jr.split(getkey(), 6)]
    net = cd.ScaledResidualNet(fields, 6, alpha="nonexpansive", beta=0.5)
    assert float(net.block_lipschitz_bound()) <= 1 + 1e-12
    for _ in range(10):
        a, b = jr.normal(getkey(), (2, 3))
        assert jnp.linalg.norm(net(a) - net(b)) <= jnp.linalg.norm(a - b) * (1 + 1e-12)
    tied = cd.ScaledResidualNet(fields[0], 4, alpha=0.1, beta=0.0)
    y = jr.normal(getkey(), (3,))
    manual = y
    for k in range(4):
        manual = manual + 0.1 * fields[0](float(k), manual, None)
    np.testing.assert_allclose(tied(y), manual, atol=1e-13)


def test_highway_gate_and_plain_layers(getkey):
    net = cd.HighwayNet(3, 4, key=getkey())
    y = jr.normal(getkey(), (3,))
    gate = net.gate(jnp.asarray(0), y)
    assert jnp.all((gate > 0) & (gate < 0.5))  # bias -2: the highway starts open
    plain = cd.PlainNet(3, 2, key=getkey())
    manual = jnp.tanh(plain.weights[1] @ jnp.tanh(plain.weights[0] @ y + plain.biases[0])
                      + plain.biases[1])
    np.testing.assert_allclose(plain(y), manual, atol=1e-14)


def test_perturbed_is_identity_at_zero(getkey):
    model, y = make_model("euler", getkey())
    deltas = jnp.zeros((model.num_layers, 3))
    np.testing.assert_allclose(model.perturbed(y, deltas), model(y), atol=1e-14)
