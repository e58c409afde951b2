"""Acceptance 5 of the foundation: learning real data, and the degradation problem."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd


@pytest.fixture(scope="module")
def digits():
    return cd.datasets.digits()


def _fit(name, digits, *, depth, steps, key=0):
    train, test = digits
    model = cd.make_classifier(
        name, num_features=64, num_classes=10, depth=depth, key=jr.PRNGKey(key)
    )
    model, history = cd.train(
        model, train, steps=steps, batch_size=128, key=jr.PRNGKey(1),
        optimizer=optax.adam(1e-3), progress=False,
    )
    return model, history, cd.evaluate(model, test)


def test_datasets_shapes_and_standardisation(digits):
    (x_tr, y_tr), (x_te, y_te) = digits
    assert x_tr.shape == (1347, 64) and x_te.shape == (450, 64)
    assert x_tr.dtype == jnp.float32 and y_tr.dtype == jnp.int32
    assert set(np.unique(np.asarray(y_te))) == set(range(10))
    np.testing.assert_allclose(np.asarray(x_tr).mean(0), 0, atol=1e-5)
    for fn in (cd.datasets.two_moons, cd.datasets.spirals):
        (xa, ya), (xb, yb) = fn(200, key=jr.PRNGKey(0))
        assert xa.shape[1] == 2 and xa.shape[0] + xb.shape[0] == 200
        assert set(np.unique(np.asarray(ya))) == {0, 1}
        # Same key, same data.
        np.testing.assert_array_equal(fn(200, key=jr.PRNGKey(0))[0][0], xa)


def test_euler_resnet_learns_digits(digits):
    _, history, result = _fit("euler", digits, depth=8, steps=300)
    assert result["accuracy"] >= 0.95, result
    assert history["loss"][-20:].mean() < history["loss"][:20].mean() / 10


def test_neural_ode_learns_digits(digits):
    model, _, result = _fit("ode", digits, depth=8, steps=250)
    assert isinstance(model.body, cd.NeuralODE)
    assert result["accuracy"] >= 0.95, result


def test_degradation_plain_vs_residual(digits):
    """A 32-layer tanh PlainNet reaches a higher *training* loss than the 32-step
    EulerResNet of the same width, data, optimiser and budget."""
    _, plain_hist, _ = _fit("plain", digits, depth=32, steps=200)
    _, euler_hist, _ = _fit("euler", digits, depth=32, steps=200)
    plain_final = plain_hist["loss"][-20:].mean()
    euler_final = euler_hist["loss"][-20:].mean()
    assert plain_final > 5 * euler_final, (plain_final, euler_final)


def test_train_step_compiles_once(caplog):
    """Once per model structure: not per step, and not again on a second call (a
    structure no other test uses, so the first call really compiles)."""
    (x, y), _ = cd.datasets.two_moons(200, key=jr.PRNGKey(0))

    def step_compiles(key):
        model = cd.make_classifier("euler", num_features=2, num_classes=2, dim=5,
                                   width=7, depth=3, key=jr.PRNGKey(key))
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            cd.train(model, (x, y), steps=6, batch_size=31, key=jr.PRNGKey(1),
                     progress=False)
        return [r.getMessage() for r in caplog.records
                if "step" in r.getMessage() and "Compiling" in r.getMessage()]

    assert len(step_compiles(0)) == 1
    assert step_compiles(1) == []


def test_train_is_deterministic_and_clips():
    (x, y), _ = cd.datasets.spirals(200, key=jr.PRNGKey(0))
    model = cd.make_classifier("euler", num_features=2, num_classes=2, dim=4, width=8,
                               depth=3, key=jr.PRNGKey(0))
    a, ha = cd.train(model, (x, y), steps=10, batch_size=50, key=jr.PRNGKey(3),
                     clip_norm=0.1, progress=False)
    b, hb = cd.train(model, (x, y), steps=10, batch_size=50, key=jr.PRNGKey(3),
                     clip_norm=0.1, progress=False)
    assert eqx.tree_equal(a, b)
    np.testing.assert_array_equal(ha["loss"], hb["loss"])
    # The step is bounded by Adam's lr whatever the gradient; clipping keeps it finite.
    assert np.all(np.isfinite(ha["grad_norm"]))


def test_batches_cover_every_sample_each_epoch():
    from contdepth._train.data import batch_indices

    key = jr.PRNGKey(0)
    idx = jnp.concatenate([batch_indices(key, s, 20, 5) for s in range(4)])
    assert sorted(np.asarray(idx).tolist()) == list(range(20))
