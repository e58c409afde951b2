"""The spiral demo (torchdiffeq's ode_demo.py ported): the `contdepth fit-spiral`
command at its defaults learns and writes its outputs, `--help` shows defaults, and the
2000-step fit reaches its target for three seeds.
"""

import json

import jax.random as jr
import numpy as np
import pytest

from contdepth._cli import main
from contdepth._demos import spiral


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One `contdepth fit-spiral` at its defaults (2000 iterations, seed 0), shared by
    the tests below; the seed-0 acceptance fit is this run."""
    out = tmp_path_factory.mktemp("spiral")
    assert main(["fit-spiral", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "spiral.json").read_text())


def test_data_and_field_match_the_demo():
    ts, ys = spiral.spiral_data()
    assert ts.shape == (1000,) and ys.shape == (1000, 2) and ys.dtype == np.float32
    np.testing.assert_allclose(ys[0], [2.0, 0.0])
    y0s, windows = spiral.segments(ys)
    assert y0s.shape == (990, 2) and windows.shape == (990, 10, 2)
    np.testing.assert_array_equal(windows[5, 0], ys[5])
    np.testing.assert_array_equal(windows[5, 9], ys[14])
    w = spiral.CubicField(key=jr.PRNGKey(0)).weights()
    assert w["w1"].shape == (50, 2) and w["w2"].shape == (2, 50)
    assert not w["b1"].any() and not w["b2"].any()
    assert 0.07 < w["w1"].std() < 0.13


def test_cli_fit_learns(cli_run):
    _, record = cli_run
    loss = np.asarray(record["train_loss"])
    assert loss.shape == (2000,) and np.all(np.isfinite(loss))
    assert np.mean(loss[-20:]) < 0.2 * np.mean(loss[:5])
    assert record["settings"]["iterations"] == 2000 and record["torch"] is None
    assert record["settings"]["seed"] == 0
    assert record["validation"]["step"] == list(range(50, 2001, 50))
    assert record["seconds"] > record["compile_seconds"] > 0


def test_run_writes_outputs(cli_run, capsys):
    out, _ = cli_run
    assert (out / "spiral.png").stat().st_size > 10_000


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["fit-spiral", "--help"])
    text = capsys.readouterr().out
    assert "(default: 2000)" in text and "contdepth-out/spiral" in text
    assert "torchdiffeq" in text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="loss"):
        spiral.fit_spiral(iterations=2, loss="huber")
    with pytest.raises(TypeError, match="iterations"):
        spiral.fit_spiral(iterations=2.5)
    with pytest.raises(ValueError, match="seed"):
        spiral.fit_spiral(iterations=2, seed=-1)
    with pytest.raises(ValueError, match="final_learning_rate"):
        spiral.fit_spiral(iterations=2, learning_rate=1e-3, final_learning_rate=1e-2)


def test_full_fit_reaches_target_seed_0(cli_run):
    """The acceptance target: full-trajectory MSE <= 1e-2 within 2000 iterations (the
    best of the 40 evaluations, `keep_best`), here from the command's own record."""
    _, record = cli_run
    assert record["mse"] <= 1e-2, record["mse"]
    assert record["best_step"] <= 2000


@pytest.mark.parametrize("seed", [1, 2])
def test_full_fit_reaches_target(seed):
    """The same target for two more seeds (the compiled step is shared with the run
    above: same structure, same optimiser; ~6 s each)."""
    result = spiral.fit_spiral(iterations=2000, seed=seed, progress=False)
    assert result.mse <= 1e-2, result.mse
    assert result.history["best_step"] <= 2000
