"""Checkpoints (issue 5): exact round trips, atomic writes, clear errors for truncated,
corrupted and mismatched files, and kill-and-resume training that is bit-identical to
an uninterrupted run."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import contdepth as cd
import contdepth._checkpoint as checkpoint_module


def _classifier(kind="euler", dim=4, depth=3, key=0, num_features=2):
    return cd.make_classifier(
        kind, num_features=num_features, num_classes=2, dim=dim, width=8, depth=depth,
        key=jr.PRNGKey(key),
    )


def _blobs(n=200):
    """Two Gaussian blobs, made with NumPy (no JAX compilation needed)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 2)) + 2.0 * y[:, None] - 1.0
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


@pytest.fixture(scope="module")
def blobs():
    return _blobs()


def _opt_state(model, optimizer=optax.adam(1e-3)):
    return optimizer.init(eqx.filter(model, eqx.is_inexact_array))


@pytest.mark.parametrize("kind", cd.MODEL_NAMES)
def test_round_trip_is_exact(tmp_path, kind):
    model = _classifier(kind)
    # Make the optimiser state non-trivial, so a mix-up of its leaves would show.
    opt_state = jax.tree.map(
        lambda a: a + 1 if eqx.is_inexact_array(a) else a, _opt_state(model)
    )
    path = cd.save(tmp_path / "m.ckpt", model, opt_state, step=7, metadata={"lr": 1e-3})
    like = _classifier(kind, key=0)
    ckpt = cd.load(path, like=like, opt_state_like=_opt_state(like))
    assert eqx.tree_equal(ckpt.model, model, typematch=True)
    assert eqx.tree_equal(ckpt.opt_state, opt_state, typematch=True)
    assert ckpt.step == 7 and ckpt.metadata == {"lr": 1e-3}
    assert ckpt.header["versions"]["contdepth"] == cd.__version__
    # Without `opt_state_like` the optimiser state is skipped, the model still loads.
    assert cd.load(path, like=like).opt_state is None


def test_float64_round_trip_and_shape_only_like(tmp_path, getkey):
    field = cd.LinearField(jr.normal(getkey(), (3, 3)))
    model = cd.EulerResNet(field, 5, 1.0)
    assert model.field.matrix.dtype == jnp.float64
    path = cd.save(tmp_path / "lin.ckpt", model)
    like = eqx.filter_eval_shape(cd.EulerResNet, field, 5, 1.0)
    loaded = cd.load(path, like=like).model
    np.testing.assert_array_equal(loaded.field.matrix, model.field.matrix)
    assert loaded.field.matrix.dtype == jnp.float64
    # A float32 template is refused rather than silently downcast.
    like32 = cd.EulerResNet(cd.LinearField(field.matrix.astype(jnp.float32)), 5, 1.0)
    with pytest.raises(ValueError, match=r"float64.*float32.*jax_enable_x64"):
        cd.load(path, like=like32)


def test_truncated_and_corrupted_files_are_rejected(tmp_path):
    model = _classifier()
    good = cd.save(tmp_path / "good.ckpt", model, step=1)
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-40], r"is truncated: \d+ bytes of the \d+"),
        "half": (data[: len(data) // 2], r"is truncated"),
        "header_only": (data[:30], r"is truncated"),
        "empty": (b"", r"is truncated \(0 bytes\)"),
        "trailing": (data + b"x", r"corrupted: 1 unexpected trailing bytes"),
        "foreign": (b"PK\x03\x04 a zip file", r"is not a contdepth checkpoint"),
    }
    flipped = bytearray(data)
    flipped[-100] ^= 0x01  # one bit in the payload
    cases["bitflip"] = (bytes(flipped), r"checksum does not match")
    header_flip = bytearray(data)
    i = data.index(b'"step": 1')
    header_flip[i + 8] = ord("2")  # a plausible but forged header value
    cases["header_edit"] = (bytes(header_flip), r"checksum does not match")
    for name, (content, match) in cases.items():
        bad = tmp_path / f"{name}.ckpt"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=match):
            cd.load(bad, like=model)
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at"):
        cd.load(tmp_path / "missing.ckpt", like=model)
    # The good checkpoint next to them is untouched and loads.
    assert eqx.tree_equal(cd.load(good, like=model).model, model)


@pytest.mark.parametrize(
    "other, match",
    [
        (dict(kind="ode"), r"`model.body` is EulerResNet in the checkpoint but NeuralODE"),
        (dict(depth=5), r"hyper-parameter `model.body.num_steps` is 3 in the checkpoint but 5"),
        (dict(dim=6), r"`model.+` is 4 in the checkpoint but 6"),
        (dict(num_features=3), r"`model.encoder.in_features` is 2 in the checkpoint but 3"),
    ],
)
def test_other_configuration_is_rejected(tmp_path, other, match):
    model = _classifier()
    path = cd.save(tmp_path / "m.ckpt", model)
    with pytest.raises(ValueError, match=match):
        cd.load(path, like=_classifier(**other))
    assert eqx.tree_equal(cd.load(path, like=_classifier()).model, model)


def test_other_optimizer_state_is_rejected(tmp_path):
    model = _classifier()
    path = cd.save(tmp_path / "m.ckpt", model, _opt_state(model, optax.adam(1e-3)))
    sgd_state = _opt_state(model, optax.sgd(1e-2, momentum=0.9))
    with pytest.raises(ValueError, match=r"does not match `opt_state_like`"):
        cd.load(path, like=model, opt_state_like=sgd_state)
    no_opt = cd.save(tmp_path / "no_opt.ckpt", model)
    with pytest.raises(ValueError, match=r"holds no opt_state"):
        cd.load(no_opt, like=model, opt_state_like=sgd_state)


def test_bad_save_arguments(tmp_path):
    model = _classifier()
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike"):
        cd.save(3, model)
    with pytest.raises(ValueError, match=r"the directory .* does not exist"):
        cd.save(tmp_path / "nope" / "m.ckpt", model)
    with pytest.raises(ValueError, match=r"`step` must be an int >= 0 or None, got -1"):
        cd.save(tmp_path / "m.ckpt", model, step=-1)
    with pytest.raises(TypeError, match=r"`metadata` must be plain JSON data"):
        cd.save(tmp_path / "m.ckpt", model, metadata={"f": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"tuples become lists"):
        cd.save(tmp_path / "m.ckpt", model, metadata={"shape": (2, 3)})
    with pytest.raises(TypeError, match=r"`metadata` must be a dict"):
        cd.save(tmp_path / "m.ckpt", model, metadata=[1])
    with pytest.raises(TypeError, match=r"`like` must be a model"):
        cd.load(cd.save(tmp_path / "m.ckpt", model), like=None)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    first, second = _classifier(key=0), _classifier(key=1)
    path = cd.save(tmp_path / "m.ckpt", first, step=1)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        cd.save(path, second, step=2)
    monkeypatch.undo()
    ckpt = cd.load(path, like=first)
    assert ckpt.step == 1 and eqx.tree_equal(ckpt.model, first)
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temp file left


def _train(data, ckpt_dir=None, steps=12, **kw):
    kw = dict(batch_size=32, key=jr.PRNGKey(1), progress=False, **kw)
    if ckpt_dir is not None:
        kw.update(checkpoint_dir=ckpt_dir, checkpoint_every=kw.pop("every", 4))
    return cd.train(_classifier(), data, steps=steps, **kw)


@pytest.fixture(scope="module")
def uninterrupted(blobs, tmp_path_factory):
    """12 steps in one go, checkpointing every 4: the run every resume must equal."""
    directory = tmp_path_factory.mktemp("reference")
    model, history = _train(blobs, directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "step-00000008.ckpt", "step-00000012.ckpt"  # the two newest are kept
    ]
    final = cd.load(directory / "step-00000012.ckpt", like=_classifier())
    assert final.step == 12 and eqx.tree_equal(final.model, model)
    return model, history, directory


def _copy(names, source, target):
    for name in names:
        (target / name).write_bytes((source / name).read_bytes())


def test_killed_and_resumed_run_is_bit_identical(tmp_path, blobs, uninterrupted):
    model, expected, reference = uninterrupted
    # The state of the directory of a process killed while writing step 12: the step-8
    # checkpoint and a half-written temporary file (never a half-written checkpoint).
    _copy(["step-00000008.ckpt"], reference, tmp_path)
    torn = tmp_path / ".step-00000012.ckpt.tmp-4242-deadbeef"
    torn.write_bytes((reference / "step-00000012.ckpt").read_bytes()[:100])
    resumed, history = _train(blobs, tmp_path)
    assert history["resumed_from"] == 8
    assert eqx.tree_equal(resumed, model, typematch=True)  # bit-identical weights
    np.testing.assert_array_equal(history["loss"], expected["loss"])
    np.testing.assert_array_equal(history["grad_norm"], expected["grad_norm"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000008.ckpt", "step-00000012.ckpt"
    ]
    final = cd.load(tmp_path / "step-00000012.ckpt", like=_classifier())
    assert final.step == 12 and eqx.tree_equal(final.model, model)


def test_corrupt_newest_checkpoint_falls_back(tmp_path, blobs, uninterrupted):
    model, expected, reference = uninterrupted
    _copy(["step-00000008.ckpt", "step-00000012.ckpt"], reference, tmp_path)
    newest = tmp_path / "step-00000012.ckpt"
    newest.write_bytes(newest.read_bytes()[:-50])  # truncated by a crash or a copy
    with pytest.warns(RuntimeWarning, match=r"Skipping an unreadable checkpoint.*truncated"):
        resumed, history = _train(blobs, tmp_path)
    assert history["resumed_from"] == 8
    assert eqx.tree_equal(resumed, model)
    np.testing.assert_array_equal(history["loss"], expected["loss"])


def test_resume_refuses_another_run(tmp_path, blobs, uninterrupted):
    _copy(["step-00000008.ckpt"], uninterrupted[2], tmp_path)
    with pytest.raises(ValueError, match=r"written by another run \(different `key`\)"):
        cd.train(_classifier(), blobs, steps=12, batch_size=32, key=jr.PRNGKey(2),
                 progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different `batch_size`"):
        cd.train(_classifier(), blobs, steps=12, batch_size=16, key=jr.PRNGKey(1),
                 progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different `train_data`"):
        _train((blobs[0] + 1, blobs[1]), tmp_path)
    with pytest.raises(ValueError, match=r"`model.body.num_steps` is 3 in the checkpoint"):
        cd.train(_classifier(depth=4), blobs, steps=12, batch_size=32, key=jr.PRNGKey(1),
                 progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"does not match `opt_state_like`"):
        _train(blobs, tmp_path, optimizer=optax.sgd(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"past `steps`=2"):
        _train(blobs, tmp_path, steps=2)
    # resume=False starts over and, once it has saved, replaces the old checkpoints.
    _, history = cd.train(_classifier(), blobs, steps=2, batch_size=16,
                          key=jr.PRNGKey(1), progress=False, checkpoint_dir=tmp_path,
                          checkpoint_every=1, resume=False)
    assert history["resumed_from"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000001.ckpt", "step-00000002.ckpt"
    ]


def test_failed_checkpoint_write_during_training(tmp_path, blobs, monkeypatch,
                                                 uninterrupted):
    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 8
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", flaky_replace)
    with pytest.warns(RuntimeWarning, match=r"previous checkpoint \(step-00000004.ckpt\) is kept"):
        model, _ = _train(blobs, tmp_path)
    monkeypatch.undo()
    assert eqx.tree_equal(model, uninterrupted[0])  # training went on regardless
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000004.ckpt", "step-00000012.ckpt"
    ]
    assert cd.load(tmp_path / "step-00000004.ckpt", like=_classifier()).step == 4


def test_bad_checkpoint_arguments(tmp_path, blobs):
    with pytest.raises(TypeError, match=r"`checkpoint_dir` must be a str or os.PathLike"):
        _train(blobs, 5)
    with pytest.raises(ValueError, match=r"`checkpoint_every` must be an int >= 1, got 0"):
        _train(blobs, tmp_path, every=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"exists and is not a directory"):
        _train(blobs, tmp_path / "file")
    with pytest.raises(TypeError, match=r"`resume` must be True or False"):
        _train(blobs, tmp_path, resume="yes")


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, jax.random as jr, numpy as np, contdepth as cd
    jax.config.update("jax_enable_x64", True)  # as in the test process (conftest)
    rng = np.random.default_rng(0)  # the same data as `_blobs`
    y = np.arange(200) % 2
    x = rng.normal(size=(200, 2)) + 2.0 * y[:, None] - 1.0
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    model = cd.make_classifier("euler", num_features=2, num_classes=2, dim=4, width=8,
                               depth=3, key=jr.PRNGKey(0))
    cd.train(model, (x, y), steps=10**7, batch_size=32, key=jr.PRNGKey(1),
             progress=False, checkpoint_dir=sys.argv[1], checkpoint_every=3)
    """
)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path, blobs):
    """A real `kill -9` of a training process, at whatever moment it lands."""
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            steps = [int(p.name[5:13]) for p in tmp_path.glob("step-*.ckpt")]
            if steps and max(steps) >= 9:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every surviving checkpoint must be readable
        survivors = sorted(tmp_path.glob("step-*.ckpt"))
        latest = max(int(p.name[5:13]) for p in survivors)
        target = latest + 5
        resumed, history = _train(blobs, tmp_path, steps=target, every=3)
    assert history["resumed_from"] == latest
    reference, ref_history = _train(blobs, steps=target)
    assert eqx.tree_equal(resumed, reference, typematch=True)
    np.testing.assert_array_equal(history["loss"], ref_history["loss"])


def test_header_is_plain_json(tmp_path):
    path = cd.save(tmp_path / "m.ckpt", _classifier(), step=3)
    data = path.read_bytes()
    start = len(checkpoint_module.MAGIC) + 8
    (length,) = checkpoint_module._LEN.unpack(data[len(checkpoint_module.MAGIC) : start])
    header = json.loads(data[start : start + length])
    assert header["step"] == 3
    assert header["trees"]["model"]["hyperparameters"][".body.num_steps"] == 3
    leaves = header["trees"]["model"]["leaves"]
    shapes = {d["path"]: d["shape"] for d in leaves if "shape" in d}
    assert shapes[".encoder.weight"] == [4, 2]
    assert isinstance(path, pathlib.Path)
