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
