"""Open training: any loss and data, validation, optimiser state in and out, no
recompiles (issue 14)."""

import pathlib
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd
from contdepth._train.static_key import Keyed


def _regression_data(n=256, key=0):
    """y = sin(x0) * x1 on R^2: float targets, shape (n, 1)."""
    x = jr.normal(jr.PRNGKey(key), (n, 2))
    y = (jnp.sin(x[:, 0]) * x[:, 1])[:, None]
    return x, y


class Regressor(eqx.Module):
    encoder: eqx.nn.Linear
    body: cd.EulerResNet
    readout: eqx.nn.Linear

    def __init__(self, key):
        k0, k1, k2 = jr.split(key, 3)
        self.encoder = eqx.nn.Linear(2, 8, key=k0)
        self.body = cd.EulerResNet(
            cd.MLPField(8, 16, 1, key=k1), horizon=1.0, num_steps=4
        )
        self.readout = eqx.nn.Linear(8, 1, key=k2)

    def __call__(self, x):
        return self.readout(self.body(self.encoder(x)))


def test_regression_with_validation_history():
    (x, y), (xv, yv) = _regression_data(256), _regression_data(128, key=1)
    model, history = cd.train(
        Regressor(jr.PRNGKey(0)),
        (x, y),
        steps=300,
        batch_size=32,
        key=jr.PRNGKey(1),
        loss_fn=cd.losses.mean_squared_error,
        optimizer=optax.adam(1e-2),
        validation_data=(xv, yv),
        eval_every=50,
        metrics={"mae": lambda m, a, b: jnp.mean(jnp.abs(jax.vmap(m)(a) - b))},
        progress=False,
    )
    val = history["validation"]
    np.testing.assert_array_equal(val["step"], [50, 100, 150, 200, 250, 300])
    assert set(val) == {"step", "loss", "mae"}
    # The recorded validation loss is the loss of the returned (final) model.
    final = float(cd.losses.mean_squared_error(model, xv, yv))
    np.testing.assert_allclose(val["loss"][-1], final, rtol=1e-6)
    baseline = float(jnp.mean(jnp.square(yv)))  # predicting 0
    assert final < baseline / 5, (final, baseline)
    assert history["loss"].shape == (300,)


def test_trajectory_loss_with_pytree_inputs():
    """Targets of shape (n, times, d); inputs a pytree `(y0, ts)`."""
    a = jnp.array([[-0.1, 1.0], [-1.0, -0.1]])
    ts = jnp.linspace(0.0, 1.0, 6)
    y0 = jr.normal(jr.PRNGKey(0), (64, 2))
    true = jax.vmap(
        lambda y: jax.vmap(lambda t: jax.scipy.linalg.expm(t * a.T) @ y)(ts)
    )(y0)
    field = cd.LinearField(0.1 * jr.normal(jr.PRNGKey(1), (2, 2)))
    ode = cd.NeuralODE(field, horizon=1.0, rtol=1e-5, atol=1e-6)

    def loss(model, inputs, targets):
        y0s, times = inputs
        pred = jax.vmap(model.trajectory)(y0s, times)
        return jnp.mean(jnp.square(pred - targets)), {
            "max_err": jnp.max(jnp.abs(pred - targets))
        }

    inputs = (y0, jnp.broadcast_to(ts, (64, 6)))
    trained, history = cd.train(
        ode,
        (inputs, true),
        steps=150,
        batch_size=16,
        key=jr.PRNGKey(2),
        loss_fn=loss,
        optimizer=optax.adam(3e-2),
        validation_data=(inputs, true),
        eval_every=75,
        progress=False,
    )
    assert history["aux"]["max_err"].shape == (150,)
    assert history["validation"]["loss"][-1] < history["validation"]["loss"][0] / 10
    assert history["validation"]["loss"][-1] < 1e-3


_RESUME = """
import sys, numpy as np, jax, jax.numpy as jnp, jax.random as jr, optax
jax.config.update("jax_enable_x64", {x64})
import contdepth as cd
sys.path.insert(0, {tests!r})
from test_open_training import _resume_setup
model, data, kw = _resume_setup({custom})
ckpt = cd.load({path!r}, like=model, opt_state_like=kw.pop("opt_state_like"))
model, history = cd.train(ckpt.model, data, steps=200, start_step=ckpt.step,
                          opt_state=ckpt.opt_state, **kw)
leaves = [np.asarray(a) for a in jax.tree.leaves(model) if hasattr(a, "dtype")]
np.savez({out!r}, loss=history["loss"], **{{f"w{{i}}": l for i, l in enumerate(leaves)}})
"""


def _resume_setup(custom: bool):
    """Model, data and settings shared by the uninterrupted and the resumed run."""
    if custom:
        data = _regression_data(128)
        model = Regressor(jr.PRNGKey(0))
        schedule = optax.cosine_decay_schedule(1e-2, 200)
        kw = dict(loss_fn=_huber, optimizer=optax.adam(schedule), clip_norm=1.0)
    else:
        data, _ = cd.datasets.two_moons(200, key=jr.PRNGKey(0))
        model = cd.make_classifier(
            "euler",
            num_features=2,
            num_classes=2,
            dim=4,
            width=8,
            depth=3,
            key=jr.PRNGKey(0),
        )
        kw = {}
    kw |= dict(batch_size=32, key=jr.PRNGKey(5), progress=False)
    opt = cd.make_train_step(
        kw.get("loss_fn", cd.losses.cross_entropy),
        kw.get("optimizer", optax.adam(1e-3)),
        clip_norm=kw.get("clip_norm"),
    )
    kw["opt_state_like"] = opt.init(model)
    return model, data, kw


def _small_classifier(depth: int):
    return cd.make_classifier("euler", num_features=2, num_classes=2, dim=4, width=8,
                              depth=depth, key=jr.PRNGKey(0))


def _huber(model, x, y):
    return jnp.mean(optax.huber_loss(jax.vmap(model)(x), y, delta=0.5))


@pytest.mark.parametrize("custom", [False, True], ids=["cross_entropy", "custom_loss"])
def test_save_load_resume_in_fresh_process_is_bit_identical(custom, tmp_path):
    model, data, kw = _resume_setup(custom)
    kw.pop("opt_state_like")
    full, full_history = cd.train(model, data, steps=200, **kw)
    half, history = cd.train(model, data, steps=100, **kw)
    path = tmp_path / "half.ckpt"
    cd.save(path, half, opt_state=history["opt_state"], step=100)

    out = tmp_path / "resumed.npz"
    script = _RESUME.format(
        tests=str(pathlib.Path(__file__).parent),
        custom=custom,
        x64=jax.config.jax_enable_x64,
        path=str(path),
        out=str(out),
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    resumed = np.load(out)
    full_leaves = [np.asarray(a) for a in jax.tree.leaves(full) if hasattr(a, "dtype")]
    for i, leaf in enumerate(full_leaves):
        np.testing.assert_array_equal(resumed[f"w{i}"], leaf)
    np.testing.assert_array_equal(
        np.concatenate([history["loss"], resumed["loss"]]), full_history["loss"]
    )


def test_second_train_call_compiles_nothing():
    """The compile guard: a second `cd.train` on a same-structure model with equal
    settings (a *new* `optax.adam(1e-3)` included) compiles nothing."""
    train, _ = cd.datasets.digits()
    compiles = []

    def listener(name, secs, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    def run(key):
        # A width no other test uses: the first call must really compile (compiled
        # steps are shared by every `cd.train` call in the process).
        model = cd.make_classifier(
            "ode", num_features=64, num_classes=10, depth=8, dim=40, width=40,
            key=jr.PRNGKey(key),
        )
        start = time.perf_counter()
        cd.train(
            model,
            train,
            steps=10,
            batch_size=128,
            key=jr.PRNGKey(1),
            optimizer=optax.adam(1e-3),
            progress=False,
        )
        return time.perf_counter() - start

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = run(0)
        compiled_first = len(compiles)
        second = run(1)  # other weights, same structure
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled_first > 0
    assert len(compiles) == compiled_first, "the second call compiled"
    assert second < 0.3 * first, (first, second)


def test_own_loop_with_make_train_step_matches_train():
    (x, y), _ = cd.datasets.two_moons(200, key=jr.PRNGKey(0))
    model = _small_classifier(depth=3)
    step = cd.make_train_step(cd.losses.cross_entropy, optax.adam(1e-2), clip_norm=1.0)
    opt_state = step.init(model)
    from contdepth._train.data import batch_indices

    mine, losses = model, []
    for i in range(12):
        idx = batch_indices(jr.PRNGKey(3), i, x.shape[0], 40)
        mine, opt_state, loss, aux = step(mine, opt_state, (x[idx], y[idx]))
        losses.append(float(loss))
        assert aux is None
    theirs, history = cd.train(
        model,
        (x, y),
        steps=12,
        batch_size=40,
        key=jr.PRNGKey(3),
        optimizer=optax.adam(1e-2),
        clip_norm=1.0,
        progress=False,
    )
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-6)
    arrays = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_array))
    for a, b in zip(arrays(mine), arrays(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_stopping_keeps_the_best_model():
    (x, y), (xv, yv) = _regression_data(64), _regression_data(64, key=1)
    # A learning rate far too large: the validation loss soon stops improving.
    model, history = cd.train(
        Regressor(jr.PRNGKey(0)),
        (x, y),
        steps=400,
        batch_size=16,
        key=jr.PRNGKey(1),
        loss_fn=cd.losses.mean_squared_error,
        optimizer=optax.sgd(0.5, momentum=0.9),
        validation_data=(xv, yv),
        eval_every=5,
        clip_norm=10.0,
        early_stopping=cd.EarlyStopping(patience=3),
        progress=False,
    )
    val = history["validation"]
    assert history["stopped_at"] is not None and history["stopped_at"] < 400
    assert history["loss"].shape == (history["stopped_at"],)
    best = int(np.argmin(val["loss"]))
    assert history["best_step"] == val["step"][best]
    assert len(val["step"]) == best + 1 + 3  # patience evaluations after the best
    np.testing.assert_allclose(
        float(cd.losses.mean_squared_error(model, xv, yv)), val["loss"][best], rtol=1e-6
    )


def test_train_rejects_bad_settings():
    (x, y), _ = cd.datasets.two_moons(100, key=jr.PRNGKey(0))
    model = _small_classifier(depth=2)
    kw = dict(steps=5, batch_size=10, key=jr.PRNGKey(1), progress=False)
    with pytest.raises(ValueError, match="`opt_state` does not fit"):
        cd.train(model, (x, y), opt_state=optax.sgd(0.1).init(model), **kw)
    with pytest.raises(ValueError, match="`start_step`"):
        cd.train(model, (x, y), start_step=5, **kw)
    with pytest.raises(TypeError, match="`loss_fn` .* floating scalar"):
        cd.train(model, (x, y), loss_fn=lambda m, a, b: jax.vmap(m)(a), **kw)
    with pytest.raises(ValueError, match="need `validation_data`"):
        cd.train(model, (x, y), eval_every=2, **kw)
    with pytest.raises(ValueError, match="monitor"):
        cd.train(
            model,
            (x, y),
            validation_data=(x, y),
            early_stopping=cd.EarlyStopping(monitor="f1"),
            **kw,
        )
    with pytest.raises(ValueError, match="leading"):
        cd.train(model, ((x, x[:5]), y), loss_fn=cd.losses.cross_entropy, **kw)
    with pytest.raises(TypeError, match="loss_fn"):
        cd.train(model, (x, x), **kw)  # float targets need a loss_fn


def test_structural_keys():
    assert Keyed(optax.adam(1e-3)) == Keyed(optax.adam(1e-3))
    assert hash(Keyed(optax.adam(1e-3))) == hash(Keyed(optax.adam(1e-3)))
    assert Keyed(optax.adam(1e-3)) != Keyed(optax.adam(1e-2))
    sched = optax.cosine_decay_schedule(1e-2, 100)
    assert Keyed(optax.adam(sched)) == Keyed(
        optax.adam(optax.cosine_decay_schedule(1e-2, 100))
    )
    assert Keyed(optax.adam(sched)) != Keyed(
        optax.adam(optax.cosine_decay_schedule(1e-2, 99))
    )
    fns = [lambda m, x, y, s=s: s * x for s in (1.0, 2.0)]
    assert Keyed(fns[0]) != Keyed(fns[1])

    class Opaque:  # no __eq__: keyed by identity, never a wrong hit
        pass

    a, b = Opaque(), Opaque()
    assert Keyed(a) == Keyed(a) and Keyed(a) != Keyed(b)


def test_checkpoint_resume_keeps_validation_history_and_best(tmp_path):
    (x, y), (xv, yv) = _regression_data(64), _regression_data(32, key=1)
    kw = dict(
        batch_size=16,
        key=jr.PRNGKey(1),
        loss_fn=cd.losses.mean_squared_error,
        optimizer=optax.adam(3e-2),
        validation_data=(xv, yv),
        eval_every=5,
        early_stopping=cd.EarlyStopping(),
        checkpoint_every=10,
        progress=False,
    )
    full, full_history = cd.train(
        Regressor(jr.PRNGKey(0)), (x, y), steps=40, checkpoint_dir=tmp_path / "a", **kw
    )
    cd.train(
        Regressor(jr.PRNGKey(0)), (x, y), steps=20, checkpoint_dir=tmp_path / "b", **kw
    )  # "interrupted" at step 20
    assert (tmp_path / "b" / "best.ckpt").is_file()
    resumed, history = cd.train(
        Regressor(jr.PRNGKey(0)), (x, y), steps=40, checkpoint_dir=tmp_path / "b", **kw
    )
    assert history["resumed_from"] == 20
    for k, v in full_history["validation"].items():
        np.testing.assert_array_equal(history["validation"][k], v)
    assert history["best_step"] == full_history["best_step"]
    assert eqx.tree_equal(
        eqx.filter(resumed, eqx.is_array), eqx.filter(full, eqx.is_array)
    )


def test_trajectory_times_captured_under_jit():
    """Concrete `ts` closed over by a jitted loss are checked on the host, not traced."""
    ode = cd.NeuralODE(cd.MLPField(2, 8, 1, key=jr.PRNGKey(0)), horizon=1.0)
    ts = jnp.linspace(0.0, 1.0, 5)
    ys = jax.jit(lambda y: ode.trajectory(y, ts))(jnp.ones(2))
    np.testing.assert_allclose(ys, ode.trajectory(jnp.ones(2), ts), rtol=1e-6)
    with pytest.raises(ValueError, match="within"):
        ode.trajectory(jnp.ones(2), 2 * ts)
