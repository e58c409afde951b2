import argparse
import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import contdepth as cd
from contdepth._cli import build_parser, main


def test_cli_train_prints_table(capsys):
    code = main(["train", "--model", "euler", "plain", "--dataset", "moons", "--steps", "5",
                 "--depth", "2", "--dim", "4", "--width", "8", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| model | dataset | params |" in out
    assert "| euler | moons |" in out and "| plain | moons |" in out


def test_cli_reports_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--depth", "0", "--steps", "1", "--no-progress"])
    assert e.value.code == 2
    assert "`depth` must be an int >= 1, got 0" in capsys.readouterr().err


# ---- `contdepth train --out`, `--data`, help (issue 14, item 4) ----------------------

SMALL = ["--steps", "5", "--depth", "2", "--dim", "8", "--width", "8", "--no-progress"]


def _blobs(n=60, d=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) + 2.0 * y[:, None]
    return x, y


def _write_csv(path, x, y, *, header=None, label_first=False):
    lines = [] if header is None else [",".join(header)]
    for xi, yi in zip(x, y):
        cells = [repr(float(v)) for v in xi]
        cells = [str(int(yi))] + cells if label_first else cells + [str(int(yi))]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_cli_train_out_saves_checkpoints_that_load_back(tmp_path, capsys):
    x, y = _blobs()
    data = tmp_path / "blobs.npz"
    np.savez(data, features=x, labels=y)
    out = tmp_path / "run"
    code = main(["train", "--model", "euler", "plain", "--data", str(data),
                 "--out", str(out), *SMALL])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| euler | blobs.npz |" in printed and "results.json" in printed
    results = _results(out)
    settings = results["settings"]
    assert settings["num_features"] == 3 and settings["num_classes"] == 3
    assert settings["num_train"] == 48 and settings["num_test"] == 12  # default 0.2
    assert settings["seed"] == 0 and settings["test_fraction"] == 0.2
    assert [row["model"] for row in results["rows"]] == ["euler", "plain"]
    features = jnp.asarray(x, dtype=jnp.float32)  # what the CLI trains on
    labels = jnp.asarray(y, dtype=jnp.int32)
    for row in results["rows"]:
        info = results["models"][row["model"]]
        assert info["make_classifier"] == {
            "model": row["model"], "num_features": 3, "num_classes": 3, "dim": 8,
            "width": 8, "depth": 2, "horizon": 1.0,
        }
        like = cd.make_classifier(**info["make_classifier"], key=jr.PRNGKey(123))
        ckpt = cd.load(out / info["checkpoint"], like=like)
        assert ckpt.step == 5
        assert ckpt.metadata["make_classifier"] == info["make_classifier"]
        assert ckpt.metadata["seed"] == 0
        # The loaded weights reproduce the reported numbers: on all samples, accuracy
        # and loss are the sample-weighted means of the train and test figures.
        full = cd.evaluate(ckpt.model, (features, labels))
        n_tr, n_te = settings["num_train"], settings["num_test"]
        acc = (n_tr * row["train acc"] + n_te * row["test acc"]) / (n_tr + n_te)
        loss = (n_tr * row["train loss"] + n_te * info["test_loss"]) / (n_tr + n_te)
        assert full["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert full["loss"] == pytest.approx(loss, rel=1e-6)
        # ... and differ from an untrained model with the same settings.
        assert cd.evaluate(like, (features, labels))["loss"] != pytest.approx(loss)


def test_cli_train_out_with_builtin_dataset(tmp_path, capsys):
    out = tmp_path / "nested" / "run"  # created with its parents
    assert main(["train", "--dataset", "moons", "--out", str(out), *SMALL]) == 0
    results = _results(out)
    assert results["settings"]["dataset"] == "moons"
    assert results["rows"][0]["dataset"] == "moons"
    info = results["models"]["euler"]
    like = cd.make_classifier(**info["make_classifier"], key=jr.PRNGKey(0))
    metadata = cd.load(out / "euler.ckpt", like=like).metadata
    assert metadata["source"]["dataset"] == "moons"


def test_cli_train_reads_npz_and_csv_alike(tmp_path, capsys):
    x, y = _blobs()
    np.savez(tmp_path / "xy.npz", x=x, y=y)  # the x / y keys work too
    _write_csv(tmp_path / "plain.csv", x, y)  # no header, labels last
    _write_csv(tmp_path / "named.csv", x, y, header=["label", "a", "b", "c"],
               label_first=True)
    runs = {
        "npz": ["--data", str(tmp_path / "xy.npz")],
        "csv": ["--data", str(tmp_path / "plain.csv")],
        "csv-last": ["--data", str(tmp_path / "plain.csv"), "--label-column", "-1"],
        "header-name": ["--data", str(tmp_path / "named.csv"),
                        "--label-column", "label"],
        "header-index": ["--data", str(tmp_path / "named.csv"), "--label-column", "0"],
    }
    losses = {}
    for name, args in runs.items():
        out = tmp_path / name
        assert main(["train", *args, "--out", str(out), *SMALL]) == 0
        results = _results(out)
        assert results["settings"]["num_features"] == 3
        losses[name] = results["rows"][0]["train loss"]
    # Same samples, same seeded split, same training: the same numbers bit for bit.
    assert len(set(losses.values())) == 1, losses
    capsys.readouterr()
    # Another --test-fraction and --seed give another split.
    out = tmp_path / "other"
    assert main(["train", *runs["npz"], "--test-fraction", "0.5", "--seed", "1",
                 "--out", str(out), *SMALL]) == 0
    assert _results(out)["settings"]["num_test"] == 30


def _bad_inputs(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "keys.npz", inputs=x, targets=y)
    np.savez(tmp_path / "frac.npz", features=x, labels=y + 0.5)
    np.savez(tmp_path / "neg.npz", features=x, labels=y - 1)
    np.savez(tmp_path / "ok.npz", features=x, labels=y)
    _write_csv(tmp_path / "ok.csv", x, y, header=["a", "b", "c", "label"])
    with open(tmp_path / "text.csv", "w") as f:
        f.write("1.0,2.0,0\n3.0,oops,1\n")
    (tmp_path / "data.txt").write_text("1,2,0\n")
    bad = tmp_path / "fraccol.csv"
    _write_csv(bad, x, y)
    bad.write_text(bad.read_text().replace(",0\n", ",0.5\n"))
    d = str(tmp_path)
    return [
        (["--data", f"{d}/missing.npz"], ["missing.npz", "no such file"]),
        (["--data", f"{d}/keys.npz"],
         ["keys.npz", "'features'", "['inputs', 'targets']"]),
        (["--data", f"{d}/frac.npz"],
         ["frac.npz", "'labels'", "integer class indices"]),
        (["--data", f"{d}/fraccol.csv"], ["fraccol.csv", "column 3", "0.5"]),
        (["--data", f"{d}/neg.npz"], ["neg.npz", "class indices in 0..1", "-1"]),
        (["--data", f"{d}/ok.npz", "--num-classes", "2"],
         ["ok.npz", "class indices in 0..1", "--num-classes 3"]),
        (["--data", f"{d}/ok.csv", "--label-column", "nope"],
         ["ok.csv", "'nope'", "['a', 'b', 'c', 'label']"]),
        (["--data", f"{d}/ok.csv", "--label-column", "7"], ["ok.csv", "out of range"]),
        (["--data", f"{d}/ok.npz", "--label-column", "0"],
         ["ok.npz", ".csv files only"]),
        (["--data", f"{d}/text.csv"], ["text.csv", "line 2", "'oops'"]),
        (["--data", f"{d}/data.txt"], ["data.txt", "unknown file type"]),
        (["--label-column", "0"], ["--label-column", "--data"]),
    ]


def test_cli_train_rejects_bad_user_data_with_exit_code_2(tmp_path, capsys):
    for args, expected in _bad_inputs(tmp_path):
        with pytest.raises(SystemExit) as e:
            main(["train", *args, *SMALL])
        assert e.value.code == 2, args
        err = capsys.readouterr().err
        assert err.startswith("contdepth train: error: "), err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        for text in expected:
            assert text in err, (args, err)


@pytest.mark.parametrize("args, expected", [
    (["--data", "a.npz", "--dataset", "moons"], "not allowed with argument"),
    (["--test-fraction", "1.5"], "--test-fraction"),
    (["--num-classes", "0"], "--num-classes"),
])
def test_cli_train_rejects_bad_flags(args, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *args, *SMALL])
    assert e.value.code == 2
    assert expected in capsys.readouterr().err


def test_cli_train_duplicate_model_and_out_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "euler", "euler", *SMALL])
    assert e.value.code == 2 and "twice" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "file"), *SMALL])
    assert e.value.code == 2 and "not a directory" in capsys.readouterr().err


def _subparsers(parser):
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_help_shows_a_description_and_defaults(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"train", "sweep"} <= set(commands)
    for argv in [["--help"]] + [[name, "--help"] for name in commands]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "default" in text, argv
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.option_strings)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 500)" in text
    assert "cd.load(" in text and "cd.make_classifier(" in text


def test_cli_train_x64_casts_user_features_to_float64(tmp_path, capsys):
    # conftest already enables float64 globally: `--x64` changes no global state here.
    x, y = _blobs(n=20, classes=2)
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--x64", "--out", str(out),
                 *SMALL]) == 0
    results = _results(out)
    assert results["settings"]["x64"] is True
    assert results["models"]["euler"]["dtype"] == "float64"
