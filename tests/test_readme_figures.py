"""Every number in README.md, the documentation pages (docs/*.md) and
benchmarks/README.md comes from `docs/readme_figures.py`: the fast figures are
recomputed here (fixed keys) and must match what the pages print to their digits; the
slow and measured ones are re-rendered from their stored results (`docs/results/`,
`benchmarks/results/`), which is cheap."""

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
        for path in fig.files:
            text = path.read_text(encoding="utf-8")
            assert len(rf.marker_pattern(name).findall(text)) == 1, (name, path)


def test_every_marked_block_has_a_figure():
    """A marker left behind in a page (a figure renamed or moved) is an error too."""
    rf = _figures()
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "docs").glob("*.md"))]
    for path in pages:
        for name in rf.re.findall(r"<!-- figure:([\w-]+) -->", path.read_text("utf-8")):
            assert name in rf.FIGURES and path in rf.FIGURES[name].files, (name, path)


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
