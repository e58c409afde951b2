import pytest

from contdepth._cli import main


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
