"""The README's promises, each checked as worded.

- No silent NaN (opt-in): `cd.checked(model)` never returns NaN/inf for a finite input
  without raising; `NeuralODE` checks itself.
- Lipschitz bounds are bounds: `sup |act'|` is computed, and no adversarial ascent on
  `||J_F(y)||_2` exceeds `cd.lipschitz_bound(F)`; the 1-D ascent reaches the computed
  `sup |act'|`.
- `ScaledResidualNet` (alpha an array leaf) loads into any `like`, evaluates under
  `eqx.filter_eval_shape` and vmaps over a stack of models.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, HealthCheck, settings, strategies as st

import contdepth as cd
from contdepth._fields._activation import KNOWN_ACTIVATIONS, known_lipschitz

from .helpers import ascend


PROMISE = settings(
    deadline=None,
    max_examples=40,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _finite(x) -> bool:
    return bool(jnp.all(jnp.isfinite(x)))


# --- No silent NaN -------------------------------------------------------------------


def _model(kind: str, scale: float, num_steps: int, horizon: float, key):
    k1, k2 = jr.split(key)
    matrix = scale * jr.normal(k1, (2, 2))
    if kind == "euler":
        return cd.EulerResNet(cd.LinearField(matrix), num_steps, horizon)
    if kind == "momentum":
        return cd.MomentumResNet(cd.LinearField(matrix), num_steps, horizon, gamma=0.5)
    if kind == "reversible":
        a, b = scale * jr.normal(k2, (2, 1, 1))
        fa, fb = cd.LinearField(a), cd.LinearField(b)
        return cd.ReversibleResNet(fa, fb, num_steps, horizon)
    if kind == "scaled":
        return cd.ScaledResidualNet(cd.LinearField(matrix), num_steps, alpha=scale)
    if kind in ("plain", "highway"):
        cls = cd.PlainNet if kind == "plain" else cd.HighwayNet
        model = cls(2, num_steps, key=k1)
        return jax.tree.map(
            lambda w: scale * w if eqx.is_inexact_array(w) else w, model
        )
    raise ValueError(kind)


@PROMISE
@given(
    kind=st.sampled_from(
        ["euler", "momentum", "reversible", "scaled", "plain", "highway"]
    ),
    scale=st.sampled_from([0.1, 1.0, 10.0, 60.0, 300.0]),
    num_steps=st.sampled_from([1, 4, 50, 400]),
    horizon=st.sampled_from([0.1, 1.0, 10.0, 400.0]),
    seed=st.integers(0, 2**16),
    jit=st.booleans(),
)
def test_checked_model_never_returns_nan_silently(
    kind, scale, num_steps, horizon, seed, jit
):
    model = _model(kind, scale, num_steps, horizon, jr.PRNGKey(seed))
    y = 3 * jr.normal(jr.PRNGKey(seed + 1), (2,))
    wrapped = cd.checked(model)
    raw = (eqx.filter_jit(model) if jit else model)(y)
    call = eqx.filter_jit(wrapped) if jit else wrapped
    if _finite(raw):
        np.testing.assert_array_equal(call(y), raw)  # the check changes nothing
    else:
        with pytest.raises(eqx.EquinoxRuntimeError, match="NaN or inf for a finite"):
            call(y)


def test_checked_audit_case_and_message():
    # The audit's counterexample: h = 1, eigenvalues 40 and -60, 400 steps.
    model = cd.EulerResNet(cd.LinearField(jnp.array([[-10.0, 50.0], [50.0, -10.0]])),
                           400, 400.0)
    y = jnp.ones(2)
    assert not _finite(model(y))  # unchecked: overflows silently, by design
    with pytest.raises(eqx.EquinoxRuntimeError) as info:
        cd.checked(model)(y)
    message = str(info.value)
    for part in ("EulerResNet(num_steps=400, horizon=400.0)", "h = T/N = 1",
                 "smaller step", "fewer steps", "float64"):
        assert part in message, message
    # NaN in, NaN out: a non-finite input is passed through, not an error.
    out = cd.checked(model)(jnp.array([jnp.nan, 1.0]))
    assert not _finite(out)
    # Under vmap one failing sample raises.
    ys = jnp.stack([jnp.zeros(2), y])
    with pytest.raises(eqx.EquinoxRuntimeError):
        jax.vmap(cd.checked(model))(ys)
    ok = jax.vmap(cd.checked(model))(ys[:1])
    np.testing.assert_array_equal(ok, jnp.zeros((1, 2)))


def test_checked_wraps_any_callable_and_trains(getkey):
    clf = cd.make_classifier("euler", num_features=2, num_classes=2, dim=3, width=4,
                             depth=2, key=getkey())
    safe = cd.checked(clf)
    x = jr.normal(getkey(), (2,))
    np.testing.assert_array_equal(safe(x), clf(x))
    (x_tr, y_tr), _ = cd.datasets.two_moons(32, key=getkey())
    trained, history = cd.train(safe, (x_tr, y_tr), steps=3, batch_size=8,
                                key=getkey(), progress=False)
    assert isinstance(trained, cd.Checked) and np.all(np.isfinite(history["loss"]))
    assert cd.checked(lambda y: 2 * y)(jnp.ones(2)).shape == (2,)
    with pytest.raises(TypeError, match="`model`"):
        cd.checked(3)


def test_neural_ode_raises_on_overflow():
    model = cd.NeuralODE(cd.LinearField(jnp.array([[300.0, 0.0], [0.0, 1.0]])), 10.0,
                         max_steps=256)
    with pytest.raises(eqx.EquinoxRuntimeError):
        model(jnp.ones(2))


# --- Lipschitz bounds ----------------------------------------------------------------


ACTIVATIONS = [pytest.param(a, id=a.__name__) for a in dict.fromkeys(KNOWN_ACTIVATIONS)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_sup_is_computed_and_reached(activation):
    sup = known_lipschitz(activation)
    starts = jnp.linspace(-8.0, 8.0, 33)
    found = ascend(lambda x: jnp.abs(jax.grad(activation)(x)), starts, steps=400)
    assert found <= sup  # a bound ...
    assert found >= sup * (1 - 1e-6)  # ... and a tight one


def test_silu_constant_is_above_its_supremum():
    # The audit's case: 1.0998 was typed for sup|silu'| = 1.09984 (not a bound).
    assert known_lipschitz(jax.nn.silu) > 1.09983932
    assert known_lipschitz(jax.nn.swish) == known_lipschitz(jax.nn.silu)
    f = cd.MLPField(1, 1, 1, activation=jax.nn.silu, activation_lipschitz=2.0,
                    key=jr.PRNGKey(0))
    w = [abs(float(layer.weight.squeeze())) for layer in f.mlp.layers]
    np.testing.assert_allclose(f.lipschitz_bound(), 2.0 * w[0] * w[1], rtol=1e-14)


def _spectral_norm(field, shape, t=0.5):
    def norm(y):
        jac = jax.jacfwd(lambda z: field(t, z, None))(y)
        size = int(np.prod(shape))
        return jnp.linalg.norm(jac.reshape(size, size), ord=2)

    return norm


def _field(kind, activation, key):
    keys = jr.split(key, 4)
    if kind == "mlp":
        return cd.MLPField(3, 6, 2, activation=activation, key=key), (3,)
    if kind == "conv":
        return cd.ConvField(2, width=2, activation=activation, key=key), (2, 3, 3)
    if kind == "piecewise":
        fields = [cd.MLPField(3, 4, 1, activation=activation, key=k) for k in keys]
        return cd.PiecewiseField(fields, 1.0), (3,)
    raise ValueError(kind)


# Every activation through an MLP; the other field kinds (whose bound composes the same
# per-activation constant with weight norms) for the smooth and the kinked extremes.
_KIND_CASES = [
    pytest.param(kind, a, id=f"{kind}-{a.__name__}")
    for kind, activations in (
        ("mlp", dict.fromkeys(KNOWN_ACTIVATIONS)),
        ("conv", (jax.nn.tanh, jax.nn.silu, jax.nn.gelu, jax.nn.relu)),
        ("piecewise", (jax.nn.tanh, jax.nn.silu, jax.nn.gelu, jax.nn.relu)),
    )
    for a in activations
]


@pytest.mark.parametrize("kind, activation", _KIND_CASES)
def test_adversarial_jacobian_norm_below_bound(kind, activation, getkey):
    field, shape = _field(kind, activation, getkey())
    bound = float(cd.lipschitz_bound(field))
    starts = 2 * jr.normal(getkey(), (4, *shape))
    for t in ((0.1, 0.9) if kind == "piecewise" else (0.5,)):
        found = ascend(_spectral_norm(field, shape, t), starts, steps=60)
        assert found <= bound, (found, bound)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_dimensional_mlp_bound_is_tight(activation, getkey):
    # F(y) = w2 act(w1 y + b1) + b2: sup |F'| = |w1 w2| sup |act'| = the bound.
    field = cd.MLPField(1, 1, 1, activation=activation, key=getkey())
    bound = float(cd.lipschitz_bound(field))
    starts = jnp.linspace(-8.0, 8.0, 33)[:, None]
    found = ascend(lambda y: jnp.abs(jax.jacfwd(lambda z: field(0.0, z))(y)[0, 0]),
                   starts, steps=400)
    assert bound * (1 - 1e-6) <= found <= bound


def test_linear_field_bound_is_its_norm(getkey):
    field = cd.LinearField(jr.normal(getkey(), (3, 3)))
    bound = float(cd.lipschitz_bound(field))
    found = ascend(_spectral_norm(field, (3,)), jr.normal(getkey(), (3, 3)), steps=20)
    np.testing.assert_allclose(found, bound, rtol=1e-12)


def test_nonexpansive_silu_is_nonexpansive(getkey):
    fields = [cd.MLPField(3, 8, 1, activation=jax.nn.silu, key=k)
              for k in jr.split(getkey(), 4)]
    net = cd.ScaledResidualNet(fields, 4, alpha="nonexpansive", beta=0.5)
    assert float(net.block_lipschitz_bound()) <= 1 + 1e-12
    found = ascend(_spectral_norm(lambda t, y, a: net(y), (3,)),
                   3 * jr.normal(getkey(), (4, 3)), steps=60)
    assert found <= 1


# --- ScaledResidualNet: alpha is data ------------------------------------------------


def _scaled(key):
    fields = [cd.MLPField(3, 8, 1, key=k) for k in jr.split(key, 3)]
    return cd.ScaledResidualNet(fields, 3, alpha="nonexpansive", beta=0.5)


def test_scaled_alpha_round_trips_through_checkpoint(tmp_path, getkey):
    net = _scaled(getkey())
    other = _scaled(getkey())
    assert float(net.alpha) != float(other.alpha)
    path = cd.save(tmp_path / "net.ckpt", net)
    loaded = cd.load(path, like=other).model
    assert eqx.tree_equal(loaded, net)
    y = jr.normal(getkey(), (3,))
    np.testing.assert_array_equal(loaded(y), net(y))


def test_scaled_alpha_under_eval_shape_and_vmap(getkey):
    shape = eqx.filter_eval_shape(lambda: _scaled(jr.PRNGKey(0)))
    assert shape.alpha.shape == ()
    keys = jr.split(getkey(), 5)
    stacked = eqx.filter_vmap(_scaled)(keys)
    ys = jr.normal(getkey(), (5, 3))
    out = eqx.filter_vmap(lambda m, y: m(y))(stacked, ys)
    for i in range(5):
        np.testing.assert_allclose(out[i], _scaled(keys[i])(ys[i]), rtol=1e-12)
        np.testing.assert_allclose(stacked.alpha[i], _scaled(keys[i]).alpha, rtol=1e-12)


def test_scaled_alpha_refreshes_after_weights_move(getkey):
    net = _scaled(getkey())
    grads = eqx.filter_grad(lambda m, y: jnp.sum(m(y) ** 2))(net, jnp.ones(3))
    assert float(grads.alpha) != 0.0  # a leaf like any weight: honestly differentiated
    moved = jax.tree.map(lambda w: 2 * w if eqx.is_inexact_array(w) else w, net)
    refreshed = eqx.tree_at(lambda m: m.alpha, moved, moved.nonexpansive_alpha())
    assert float(refreshed.block_lipschitz_bound()) <= 1 + 1e-12
    with pytest.raises(ValueError, match="finite Lipschitz bound"):
        cd.ScaledResidualNet(lambda t, y, args: y, 2, alpha="nonexpansive", beta=0.5)
