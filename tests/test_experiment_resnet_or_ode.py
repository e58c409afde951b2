"""`run_resnet_or_ode` (Sander, Ablin & Peyré 2022) at a small size: one run of
3 depths x 2 inits x 3 seeds, every claim checked per seed."""

import argparse
import json

import jax.random as jr
import numpy as np
import pytest

from contdepth._experiments import resnet_or_ode as roo


DEPTHS = (4, 8, 16)


@pytest.fixture(scope="module")
def result():
    return roo.run_resnet_or_ode(
        DEPTHS, key=jr.PRNGKey(0), num_seeds=3, steps=150, dim=8, hidden=16,
        grad_batch=64, ode_samples=32, ode_tol=1e-7, memory_free_training=False,
    )


def _slopes(result, name, init):
    return np.array([result.fits[name][init].slope,
                     *result.seed_slopes[name][init]])


def test_accuracy_well_above_chance(result):
    for name in ("accuracy", "refined_accuracy", "ode_accuracy"):
        assert result.measures[name].min() > 0.8, name
    assert result.memory_free_training is None


def test_smooth_init_trains_to_an_ode(result):
    # Every seed: the trained body approaches its refinement and its Neural ODE at
    # rate ~1/N, its weights stay smooth, and the memory-free gradient converges.
    assert (_slopes(result, "refine_gap", "smooth") <= -0.7).all()
    assert (_slopes(result, "ode_gap", "smooth") <= -0.7).all()
    assert (_slopes(result, "mf_error_euler", "smooth") <= -0.7).all()
    assert (_slopes(result, "mf_error_corrected", "smooth") <= -1.5).all()
    # Adam-trained smooth weights: increments fall, if slower than 1/N here.
    assert (_slopes(result, "max_increment", "smooth") <= -0.25).all()
    m = result.measures
    assert (m["max_increment"][0] < m["max_increment"][1] / 5).all()
    # The discrete H^1 norm stays bounded (~ constant).
    assert (np.abs(_slopes(result, "h1_norm", "smooth")) < 0.2).all()


def test_iid_init_is_not_an_ode(result):
    # i.i.d. layers stay rough: increments do not fall, H^1 grows like sqrt(N)^2,
    # and the gap to the refined net / Neural ODE stays O(1), far above smooth's.
    assert (_slopes(result, "max_increment", "iid") > -0.2).all()
    assert (_slopes(result, "h1_norm", "iid") > 0.8).all()
    assert (_slopes(result, "refine_gap", "iid") > -0.4).all()
    assert (_slopes(result, "ode_gap", "iid") > -0.4).all()
    m = result.measures
    assert (m["refine_gap"][1, -1] > 5 * m["refine_gap"][0, -1]).all()
    assert (m["ode_gap"][1, -1] > 5 * m["ode_gap"][0, -1]).all()
    # What holds nonetheless: the memory-free gradient only needs Lipschitz
    # residuals, not smooth weights (Sander et al.), and it converges here too.
    assert (_slopes(result, "mf_error_euler", "iid") <= -0.7).all()


def test_outputs_and_summary(result, tmp_path):
    record = roo.write_outputs(result, tmp_path, seed=0)
    assert (tmp_path / "resnet_or_ode.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "resnet_or_ode.json").read_text())
    assert saved["paper"] == roo.PAPER_SETTING and saved["ours"]["depths"] == [4, 8, 16]
    assert saved == json.loads(json.dumps(record))
    for i, init in enumerate(roo.INITS):
        for j, N in enumerate(DEPTHS):
            row = saved["results"][init][j]
            assert row["depth"] == N
            np.testing.assert_allclose(row["refine_gap"],
                                       result.measures["refine_gap"][i, j])
        fit = saved["fits"]["mf_error_euler"][init]
        assert fit["slope"] == pytest.approx(result.fits["mf_error_euler"][init].slope)
        assert len(fit["seed_slopes"]) == 3
    assert saved["memory_free_training"] is None
    text = roo.summary(result)
    assert "| smooth | 16 |" in text and "| iid | 4 |" in text and "refine_gap" in text


def test_cli_parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    roo.add_parser(sub)
    args = parser.parse_args(["resnet-or-ode", "--depths", "4,8,16", "--seeds", "2",
                              "--out", "somewhere", "--no-memory-free-training"])
    assert args.depths == [4, 8, 16] and args.seeds == 2 and args.out == "somewhere"
    assert args.no_memory_free_training and args.func is roo.run
    defaults = parser.parse_args(["resnet-or-ode"])
    assert defaults.depths == list(roo.DEPTHS) and defaults.steps == 300
    with pytest.raises(SystemExit):
        parser.parse_args(["resnet-or-ode", "--depths", "4,x"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=(4, 8)), "at least 3 distinct"),
    (dict(depths=(1, 4, 8)), "at least 3 distinct"),
    (dict(depths=(4, 8, 16), memory_free_depth=5), "memory_free_depth"),
    (dict(depths=(4, 8, 16), steps=0), "steps"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        roo.run_resnet_or_ode(key=jr.PRNGKey(0), **kwargs)
