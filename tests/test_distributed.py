"""Data-parallel training and sharded sweeps on 4 forced host devices (issue 7).

The device count must be fixed before JAX starts, so the checks run in a subprocess
(`tests/_distributed_worker.py`) and this module asserts on what it reports."""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def report():
    worker = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
    # The suite's XLA_FLAGS (tests/conftest.py) travel; the worker adds the device count.
    env = dict(os.environ)
    out = {}
    for part in ("train", "sweep"):
        proc = subprocess.run(
            [sys.executable, worker, part], capture_output=True, text=True, env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def test_four_devices(report):
    assert report["num_devices"] == 4


def test_sharded_training_equals_single_device(report):
    assert report["param_diff"] <= 1e-10
    assert report["loss_diff"] <= 1e-10
    assert report["auto_param_diff"] <= 1e-10
    assert report["custom_param_diff"] <= 1e-10  # any loss, pytree inputs
    assert report["custom_val_diff"] <= 1e-10


def test_arrays_are_really_sharded(report):
    assert report["batch_sharding_spec"] == ["data"]
    assert "spec=P()" in report["param_sharding"]  # parameters replicated
    assert report["batch_devices"] == 4
    assert report["shard_shapes"] == [[2, 3]]
    assert report["jacobian_devices"] == 4
    assert report["jacobian_diff"] <= 1e-12


def test_indivisible_batch_is_a_clear_error(report):
    msg = report["indivisible_error"]
    assert msg is not None
    assert "batch_size" in msg and "66" in msg and "4" in msg


def test_sharded_sweep_gives_the_same_table(report):
    assert report["sweep_devices"] == 4
    # <= 1e-10 relative (times cond for the ill-conditioned plain stack's sigma_min)
    assert report["sweep_rel_diff_in_resolution_units"] <= 1.0
    assert report["sweep_tables_equal"]
