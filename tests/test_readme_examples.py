"""The README's "Bring your own field, model and solver" section runs as written."""

import pathlib
import re

import pytest


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bring your own field, model and solver"


def _section_code() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_bring_your_own_section_runs(capsys):
    blocks = _section_code()
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    sweep = namespace["sweep"]
    assert set(sweep.families) == {"euler", "scaled", "mine"}
    for family in sweep.families:
        assert "jac_rel_err" in sweep.families[family]
    assert "| N |" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["Bring your own", "Solver failures"])
def test_linked_sections_exist(name):
    assert f"## {name}" in README.read_text(encoding="utf-8") or f"### {name}" in (
        README.read_text(encoding="utf-8")
    )


def _blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(section)
    end = text.index("\n### ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_training_your_own_way_section_runs(tmp_path, monkeypatch, capsys):
    """Custom loss with validation, save -> load -> continue, and an own loop."""
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("### Training your own way")
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    history, more = namespace["history"], namespace["more"]
    val = history["validation"]
    assert list(val["step"]) == [50, 100, 150, 200, 250, 300, 350, 400]
    assert val["loss"][-1] < val["loss"][0] / 3, val["loss"]
    assert more["resumed_from"] == 400 and more["loss"].shape == (100,)
    assert (tmp_path / "half.ckpt").is_file()
