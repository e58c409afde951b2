"""Depth regularity, untied beta-scaled ResNets, depth refinement and the memory-free
backward pass (Sander et al. 2022; Marion et al. 2024; Cohen et al. 2021)."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd
from contdepth._depth.memory_free import memory_free_apply, MemoryFree
from contdepth._depth.refine import refine_depth
from contdepth._depth.regularity import (
    depth_regularity,
    layer_parameters,
    scaling_exponent,
)
from contdepth._depth.untied import as_neural_ode, ResidualBranch, untied_resnet


DIM, HIDDEN = 3, 5
KEYS = (0, 1, 2)


def _net(key, n, init, beta=1.0):
    return untied_resnet(
        jr.PRNGKey(key), dim=DIM, hidden=HIDDEN, num_layers=n, beta=beta, init=init
    )


def _x(key):
    return jr.normal(jr.PRNGKey(100 + key), (DIM,))


@eqx.filter_jit
def _apply(model, x):
    return model(x)


# ----------------------------------------------------------------------------- 1


def test_depth_regularity_by_hand():
    theta = jnp.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [8.0, 16.0]])
    r = depth_regularity(theta)
    assert r.num_layers == 4
    np.testing.assert_allclose(r.increments, [5.0, 0.0, 13.0])
    assert float(r.max_increment) == 13.0
    assert math.isclose(float(r.max_norm), math.sqrt(64 + 256))
    assert float(r.quadratic_variation) == 25.0 + 169.0
    norms_sq = [0.0, 25.0, 25.0, 320.0]
    h1 = math.sqrt(sum(norms_sq) / 4 + 4 * 194.0)
    assert math.isclose(float(r.h1_norm), h1, rel_tol=1e-14)
    # The same layers as a sequence of per-layer PyTrees, and through the protocol.
    seq = [{"a": row[:1], "b": row[1:]} for row in theta]
    np.testing.assert_array_equal(layer_parameters(seq), theta)

    class Stack:
        def layer_parameters(self):
            return theta

    assert float(depth_regularity(Stack()).quadratic_variation) == 194.0
    one = depth_regularity(theta[:1])
    assert float(one.max_increment) == 0.0 and one.increments.shape == (0,)


def _hand_net(n=4):
    """An untied net with known, non-random weights (no PRNG: nothing to compile)."""
    W = jnp.arange(n * HIDDEN * DIM, dtype=float).reshape(n, HIDDEN, DIM) / 100
    V = jnp.cos(jnp.arange(n * DIM * HIDDEN, dtype=float)).reshape(n, DIM, HIDDEN)
    fields = [ResidualBranch(W[k], V[k]) for k in range(n)]
    return cd.ScaledResidualNet(fields, n, alpha=1 / n), W, V


def test_layer_parameters_of_models(getkey):
    plain = cd.PlainNet(3, 4, key=getkey())
    rows = layer_parameters(plain)
    np.testing.assert_array_equal(
        rows[2], jnp.concatenate([plain.weights[2].ravel(), plain.biases[2]])
    )
    net, W, V = _hand_net()
    rows = layer_parameters(net)
    assert rows.shape == (4, 2 * DIM * HIDDEN)
    np.testing.assert_array_equal(
        rows[1], jnp.concatenate([W[1].ravel(), V[1].ravel()])
    )
    # An Euler ResNet of 2M steps over M pieces: one row per step, each piece twice.
    pieces = [net.layer(k) for k in range(4)]
    euler = cd.EulerResNet(cd.PiecewiseField(pieces, 1.0), 8, 1.0)
    np.testing.assert_array_equal(layer_parameters(euler), jnp.repeat(rows, 2, axis=0))
    tied = cd.ScaledResidualNet(pieces[0], 4, alpha=0.5)
    np.testing.assert_array_equal(layer_parameters(tied), jnp.stack([rows[0]] * 4))
    np.testing.assert_array_equal(layer_parameters(MemoryFree(net)), rows)
    with pytest.raises(TypeError, match="layer_parameters"):
        layer_parameters(cd.NeuralODE(pieces[0], 1.0))
    with pytest.raises(TypeError, match="floating point"):
        layer_parameters(jnp.arange(4))
    with pytest.raises(ValueError, match="different numbers"):
        layer_parameters([jnp.ones(2), jnp.ones(3)])


def test_tied_increments_zero_iid_not_falling():
    for key in KEYS:
        for init in ("tied", "smooth"):
            assert float(depth_regularity(_net(key, 64, init)).max_increment) == 0.0
        iid = [depth_regularity(_net(key, n, "iid")) for n in (8, 64)]
        smooth = [depth_regularity(_net(key, n, "interpolated")) for n in (8, 64)]
        # i.i.d. layers: increments O(1) at every depth, H^1 norm ~ sqrt(N).
        assert float(iid[1].max_increment) > 0.7 * float(iid[0].max_increment)
        assert float(iid[1].h1_norm) > 2.0 * float(iid[0].h1_norm)
        # Smooth in depth: increments O(1/N), H^1 norm bounded.
        ratio = float(smooth[1].max_increment) / float(smooth[0].max_increment)
        assert 0.1 < ratio < 0.15, ratio  # 8/64 = 0.125
        assert float(smooth[1].h1_norm) < 1.2 * float(smooth[0].h1_norm)


def test_scaling_exponent():
    depths = np.array([4, 8, 16, 32, 64])
    fit = scaling_exponent(depths, 2.5 * depths**-1.5)
    assert math.isclose(fit.slope, -1.5, abs_tol=1e-12)
    assert math.isclose(fit.intercept, math.log(2.5), abs_tol=1e-12)
    assert fit.slope_stderr < 1e-12 and math.isclose(fit.r_squared, 1.0)
    noisy = scaling_exponent(
        depths, 2.5 * depths**-1.5 * np.array([1, 1.2, 0.9, 1.1, 1])
    )
    assert noisy.slope_stderr > 1e-3 and noisy.r_squared < 1.0
    with pytest.raises(ValueError, match="> 0"):
        scaling_exponent([1, 2, 3], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="at least 3"):
        scaling_exponent([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        scaling_exponent([1, 2, 3], [1.0, 2.0])


# ----------------------------------------------------------------------------- 2


def test_untied_resnet_structure_and_errors():
    net = _net(0, 6, "iid", beta=0.5)
    x = _x(0)
    y, h = x, 6**-0.5
    for k in range(6):
        W, V = net.fields.W[k], net.fields.V[k]
        y = y + h * V @ jnp.tanh(W @ y)
    np.testing.assert_allclose(net(x), y, rtol=1e-13)
    smooth = _net(0, 6, "smooth")
    np.testing.assert_array_equal(smooth(x), x)  # V = 0: identity at initialisation
    branch = ResidualBranch(net.fields.W[0], net.fields.V[0], activation=jax.nn.relu)
    bound = jnp.linalg.norm(net.fields.W[0], ord=2) * jnp.linalg.norm(
        net.fields.V[0], ord=2
    )
    assert math.isclose(float(branch.lipschitz_bound()), float(bound), rel_tol=1e-9)
    with pytest.raises(ValueError, match="beta"):
        _net(0, 4, "iid", beta=0.0)
    with pytest.raises(ValueError, match="init"):
        _net(0, 4, "gaussian")
    with pytest.raises(ValueError, match="V"):
        ResidualBranch(jnp.ones((5, 3)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="beta=1"):
        as_neural_ode(_net(0, 4, "iid", beta=0.5))


@eqx.filter_jit
def _ode_gap(net, ode, x):
    return jnp.linalg.norm(net(x) - ode(x)), jnp.linalg.norm(net(x) - x)


def test_as_neural_ode_order_one():
    depths = (8, 16, 32)
    x = _x(0)
    nets = [_net(0, n, "interpolated") for n in depths]
    # Heun with steps on the layer grid: O(dt^2) ~ 1e-5, far below the O(1/N) gap.
    odes = [as_neural_ode(m, solver=diffrax.Heun(), dt0=1 / 256) for m in nets]
    gaps = [_ode_gap(m, ode, x) for m, ode in zip(nets, odes)]
    assert all(float(moved) > 0.1 for _, moved in gaps)  # not trivially close
    fit = scaling_exponent(depths, [float(gap) for gap, _ in gaps])
    assert -1.2 < fit.slope < -0.8, (fit, gaps)
    # Piecewise-constant weights: on [k/N, (k+1)/N) the ODE field is layer k.
    net = _net(1, 8, "iid")
    field = as_neural_ode(net, horizon=2.0, interpolation="piecewise").field
    for k, t in ((0, 0.0), (3, 0.75), (3, 0.99), (7, 1.99)):
        np.testing.assert_allclose(
            field(t, x, None), net.layer(k)(t, x, None) / 2.0, rtol=1e-14
        )
    assert len(field.jump_times(jnp.float64)) == 7


# ----------------------------------------------------------------------------- 3


def test_refine_identity_and_piecewise():
    net = _net(0, 8, "iid")
    x = _x(0)
    np.testing.assert_array_equal(refine_depth(net, 1)(x), net(x))
    np.testing.assert_array_equal(
        refine_depth(net, 1, interpolation="piecewise")(x), net(x)
    )
    refined = refine_depth(net, 4, interpolation="piecewise")
    assert refined.num_layers == 32 and math.isclose(float(refined.alpha), 1 / 32)
    euler = cd.EulerResNet(
        cd.PiecewiseField([net.layer(k) for k in range(8)], 1.0), 32, 1.0
    )
    np.testing.assert_allclose(refined(x), euler(x), rtol=1e-13, atol=1e-14)
    with pytest.raises(TypeError, match="ScaledResidualNet"):
        refine_depth(euler, 2)
    with pytest.raises(ValueError, match="beta"):
        refine_depth(_net(0, 1, "iid"), 2)


def test_refine_linear_converges_for_smooth_weights():
    factors, depths = (1, 2, 4, 8), (16, 32, 64)
    gaps = {"iid": [], "interpolated": []}
    for key in KEYS:
        x = _x(key)
        net = _net(key, depths[0], "interpolated")
        outs = [_apply(refine_depth(net, r), x) for r in factors]
        cauchy = [float(jnp.linalg.norm(a - b)) for a, b in zip(outs, outs[1:])]
        # Refining smooth weights: a Cauchy sequence, differences O(1/r).
        fit = scaling_exponent(factors[:-1], cauchy)
        assert -1.2 < fit.slope < -0.8, (key, fit, cauchy)
        for init in gaps:
            nets = [_net(key, n, init) for n in depths]
            gaps[init].append(
                [
                    float(jnp.linalg.norm(_apply(refine_depth(m, 8), x) - _apply(m, x)))
                    for m in nets
                ]
            )
        # The gap between a net and its refinement: O(1/N) for smooth weights.
        fit = scaling_exponent(depths, gaps["interpolated"][-1])
        assert -1.2 < fit.slope < -0.8, (key, fit, gaps)
    # For i.i.d. weights the gap is a sum of random O(1/N^2) jumps, O(N^-1/2) on
    # average: over the keys, many times the smooth gap at the largest depth.
    iid, smooth = np.asarray(gaps["iid"]), np.asarray(gaps["interpolated"])
    assert np.mean(iid[:, -1]) > 3 * np.mean(smooth[:, -1]), (iid, smooth)


# ----------------------------------------------------------------------------- 4


def _flat(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.concatenate([jnp.ravel(a) for a in leaves])


def _loss(model_and_x):
    model, x = model_and_x
    return jnp.sum(jnp.sin(model(x)))


@eqx.filter_jit
def _memory_free_errors(nets, xs):
    """Error of the memory-free gradient against exact backpropagation, per
    reconstruction: the largest of the relative errors of `dL/dx` and of `dL/dweights`
    and the error of `dL/dlog(alpha) = alpha dL/dalpha` relative to `|dL/dx|` (it sums
    `N` per-layer terms, so `dL/dalpha` itself scales like `1/alpha`). `nets` and `xs`
    are stacked over keys."""

    def grads(model, x):
        g_model, g_x = eqx.filter_grad(_loss)((model, x))
        g_net = g_model.net if isinstance(model, MemoryFree) else g_model
        return g_x, _flat(g_net.fields), g_net.alpha

    def one(net, x):
        e_x, e_w, e_a = grads(net, x)
        errors = []
        for rec in ("euler", "heun", "corrected"):
            a_x, a_w, a_a = grads(MemoryFree(net, reconstruction=rec), x)
            errors.append(
                jnp.max(
                    jnp.stack(
                        [
                            jnp.linalg.norm(a_x - e_x) / jnp.linalg.norm(e_x),
                            jnp.linalg.norm(a_w - e_w) / jnp.linalg.norm(e_w),
                            net.alpha * jnp.abs(a_a - e_a) / jnp.linalg.norm(e_x),
                        ]
                    )
                )
            )
        return jnp.stack(errors)

    return eqx.filter_vmap(one)(nets, xs)


def _stack(models):
    dyns, static = zip(*(eqx.partition(m, eqx.is_array) for m in models))
    return eqx.combine(jax.tree.map(lambda *a: jnp.stack(a), *dyns), static[0])


def test_memory_free_gradient_error_order():
    depths = (16, 32, 64)
    xs = jnp.stack([_x(k) for k in KEYS])
    errors = np.stack(
        [
            _memory_free_errors(_stack([_net(k, n, "interpolated") for k in KEYS]), xs)
            for n in depths
        ],
        axis=1,
    )  # (keys, depths, reconstructions)
    for i in range(len(KEYS)):
        euler = scaling_exponent(depths, errors[i, :, 0])
        heun = scaling_exponent(depths, errors[i, :, 1])
        corrected = scaling_exponent(depths, errors[i, :, 2])
        assert -1.3 < euler.slope < -0.7, (i, euler, errors[i])
        # Heun's trapezoid: same order as Euler for the forward-Euler inverse, about
        # half the constant; the fixed-point correction: second order.
        assert -1.3 < heun.slope < -0.7, (i, heun, errors[i])
        assert np.all(
            (errors[i, :, 1] / errors[i, :, 0] > 0.3)
            & (errors[i, :, 1] / errors[i, :, 0] < 0.7)
        ), errors[i]
        assert corrected.slope < -1.6, (i, corrected, errors[i])


@eqx.filter_jit
def _input_grad_error(net, x):
    def loss(model):
        return lambda x: jnp.sum(jnp.sin(model(x)))

    exact = jax.grad(loss(net))(x)
    approx = jax.grad(loss(MemoryFree(net)))(x)
    return jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact)


def test_memory_free_exact_forward_and_large_step():
    net = _net(0, 8, "iid")
    x = _x(0)
    np.testing.assert_array_equal(_apply(MemoryFree(net), x), _apply(net, x))
    heun = MemoryFree(net, reconstruction="heun")
    np.testing.assert_array_equal(_apply(heun, x), _apply(net, x))

    # What the backward pass keeps: exact backprop stores per-layer activations; the
    # memory-free pass stores the weights, alpha, the input and the output only.
    def residual_size(model):
        _, vjp = jax.vjp(lambda x: model(x), x)
        return sum(a.size for a in jax.tree.leaves(vjp) if hasattr(a, "size"))

    weights = net.fields.W.size + net.fields.V.size
    assert residual_size(MemoryFree(net)) == weights + 1 + 2 * DIM
    assert residual_size(net) >= weights + 1 + 8 * HIDDEN
    # h = 1/8 of i.i.d. branches: small error; h = 1: reconstruction is far off.
    assert float(_input_grad_error(net, x)) < 0.05
    big_step = eqx.tree_at(lambda m: m.alpha, net, jnp.asarray(1.0))
    assert float(_input_grad_error(big_step, x)) > 0.1
    tied = cd.ScaledResidualNet(net.layer(0), 8, alpha=1 / 8)
    assert float(_input_grad_error(tied, x)) < 0.05
    damped = cd.ScaledResidualNet(net.layer(0), 8, alpha=0.1, beta=0.5)
    with pytest.raises(ValueError, match="damped"):
        MemoryFree(damped)
    with pytest.raises(ValueError, match="reconstruction"):
        MemoryFree(net, reconstruction="rk4")
    with pytest.raises(TypeError, match="ScaledResidualNet"):
        memory_free_apply(net.layer(0), x)
