"""The code on the documentation pages and in the README runs as written: the pages'
"Bring your own field, model and solver" (docs/bring-your-own.md) and "Training your
own way" (docs/training.md), and the README's short tour (at smaller sizes)."""

import pathlib
import re

import jax.numpy as jnp
import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BRING_YOUR_OWN = DOCS / "bring-your-own.md"
TRAINING = DOCS / "training.md"


def _blocks(path: pathlib.Path, heading: str | None = None) -> list[str]:
    """The ```python blocks of `path`, or of its section under `heading` (up to the
    next heading of the same or a higher level; `#` lines inside code are comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if heading is not None:
        start = lines.index(heading)
        level, fenced, end = len(heading.split(" ")[0]), False, len(lines)
        for i in range(start + 1, len(lines)):
            fenced ^= lines[i].startswith("```")
            hashes = re.match(r"(#+) ", lines[i])
            if not fenced and hashes and len(hashes[1]) <= level:
                end = i
                break
        lines = lines[start:end]
    return re.findall(r"```python\n(.*?)```", "\n".join(lines) + "\n", flags=re.S)


def _run(blocks: list[str], path: pathlib.Path) -> dict:
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102
    return namespace


def test_bring_your_own_section_runs(capsys):
    blocks = _blocks(BRING_YOUR_OWN)
    assert len(blocks) >= 5
    sweep = _run(blocks, BRING_YOUR_OWN)["sweep"]
    assert set(sweep.families) == {"euler", "scaled", "mine"}
    for family in sweep.families:
        assert "jac_rel_err" in sweep.families[family]
    assert "| N |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("page", "anchor"),
    [("bring-your-own.md", "# Bring your own field, model and solver"),
     ("errors-and-guarantees.md", "## Solver failures (`NeuralODE`)"),
     ("checkpoints.md", "## Checkpointed training"),
     ("training.md", "## Learning on data")],
)
def test_linked_sections_exist(page, anchor):
    """The headings other pages link to (`page.md#anchor`); `mkdocs build --strict`
    checks the anchors themselves."""
    assert f"\n{anchor}\n" in "\n" + (DOCS / page).read_text(encoding="utf-8")


def test_readme_links_point_to_existing_files():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?:docs|benchmarks|notebooks)/[^)#]+)", text)
    assert len(targets) >= 10
    missing = [t for t in targets if not (ROOT / t).is_file()]
    assert not missing, missing


def test_training_your_own_way_section_runs(tmp_path, monkeypatch, capsys):
    """Custom loss with validation, save -> load -> continue, and an own loop."""
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(TRAINING, "## Training your own way")
    assert len(blocks) == 3
    namespace = _run(blocks, TRAINING)
    history, more = namespace["history"], namespace["more"]
    val = history["validation"]
    assert list(val["step"]) == [50, 100, 150, 200, 250, 300, 350, 400]
    assert val["loss"][-1] < val["loss"][0] / 3, val["loss"]
    assert more["resumed_from"] == 400 and more["loss"].shape == (100,)
    assert (tmp_path / "half.ckpt").is_file()


# The tour as written trains 300 steps and sweeps N up to 512 with the untrained
# baselines (about a minute on two cores); the test runs the same code, smaller.
_TOUR_SIZES = {
    "steps=(8, 64, 512), progress=False":
        "steps=(4, 16), progress=False, baselines=False",
    "steps=300": "steps=40",
    "cd.EulerResNet(model.body.field, 512, 1.)":
        "cd.EulerResNet(model.body.field, 64, 1.)",
}


def test_readme_tour_runs(capsys):
    (block,) = _blocks(README, "## A short tour")
    assert len(block.splitlines()) <= 60
    for written, smaller in _TOUR_SIZES.items():
        assert block.count(written) == 1, written
        block = block.replace(written, smaller)
    ns = _run([block], README)
    # the two models of one field agree to O(h), and so do their spectra
    assert jnp.allclose(ns["s_resnet"], ns["s_ode"], rtol=0.05)
    err = ns["sweep"].column("euler", "jac_rel_err")
    assert err[1] < err[0] / 2
    acc = ns["cd"].evaluate(ns["model"], ns["test_data"])["accuracy"]
    deeper = ns["cd"].evaluate(ns["deeper"], ns["test_data"])["accuracy"]
    assert acc > 0.8 and abs(deeper - acc) < 0.03, (acc, deeper)
    assert "| N |" in capsys.readouterr().out
