"""The notebooks in `notebooks/`: built from their sources, stored without outputs, and
executed top to bottom (each asserts its claim, so a regression fails here).

Execution uses nbclient with the `python3` kernel of this interpreter, cwd a scratch
`notebooks/` (so saved figures never overwrite tracked files),
`MPLBACKEND=Agg`, 180 s per cell. It is marked `slow` (about 20-60 s per notebook on
two cores); CI runs it.
"""

import importlib.util
import pathlib

import pytest


nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01_residual_jacobian",
    "02_depth_as_time",
    "03_neural_ode_vs_resnet",
    "04_stability",
    "05_landscape_and_ensembles",
    "06_local_vs_global_flows",
    "07_smooth_stays_smooth",
    "08_scaling_regimes",
    "09_resnet_or_ode",
    "10_jacobian_control",
    "11_augmented_circles",
    "12_cnf",
)
# The reproduced experiments run at the papers' sizes (minutes on two cores): outside
# the default run, `make research` executes them; their claims are asserted
# at small size in tests/test_experiments_*.py.
RESEARCH = {
    "07_smooth_stays_smooth",
    "08_scaling_regimes",
    "09_resnet_or_ode",
    "10_jacobian_control",
    "11_augmented_circles",
    "12_cnf",
}
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _read(path):
    return nbformat.read(path, as_version=4)


def _load_builder():
    spec = importlib.util.spec_from_file_location("_nb_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_present():
    assert tuple(p.stem for p in PATHS) == EXPECTED


def test_notebooks_match_their_sources():
    # `python notebooks/_build.py` regenerates them; a stale .ipynb fails here.
    assert _load_builder().main(["--check"]) == 0


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_states_its_claim(path):
    nb = _read(path)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "**Claim" in first.source
    source = "\n".join(c.source for c in code)
    assert "import contdepth as cd" in source
    # The public API only.
    assert "contdepth._" not in source and "from contdepth" not in source
    assert any(line.lstrip().startswith("assert ") for line in source.splitlines())
    assert "plt." in source


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.research) if p.stem in RESEARCH else p
     for p in PATHS],
    ids=lambda p: p.stem,
)
def test_notebook_executes(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # inherited by the kernel
    nb = _read(path)
    # A scratch `notebooks/` next to a scratch `docs/`: what a notebook saves (02 saves
    # `../docs/depth_as_time.png`) lands there, never over the tracked files.
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    client = nbclient.NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs if out.output_type == "error"
    ]
    assert not errors
    if path.stem == "02_depth_as_time":
        assert (tmp_path / "docs" / "depth_as_time.png").stat().st_size > 10_000
