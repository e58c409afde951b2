"""Every number in README.md and benchmarks/README.md comes from `docs/readme_figures.py`:
the fast figures are recomputed here (fixed keys) and must match what the README
prints to its digits; the slow and measured ones are re-rendered from their stored
results (`docs/results/`, `benchmarks/results/`), which is cheap."""

import pathlib
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "readme_figures.py"


def _figures():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_figures
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return readme_figures


def test_every_figure_has_exactly_one_marked_block():
    rf = _figures()
    for name, fig in rf.FIGURES.items():
        text = fig.file.read_text(encoding="utf-8")
        assert len(rf.marker_pattern(name).findall(text)) == 1, name


@pytest.mark.parametrize("kind", ["stored", "fast"])
def test_readme_figures_are_current(kind):
    rf = _figures()
    if kind == "fast":
        names = [n for n, f in rf.FIGURES.items() if f.kind == "fast"]
    else:
        names = [n for n, f in rf.FIGURES.items() if f.kind != "fast"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--only", *names],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        proc.stderr[-3000:] + "\nRun `python docs/readme_figures.py` and review the diff."
    )
