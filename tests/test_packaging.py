"""Packaging: the core install needs no optional dependency, optional features name
their extra, the public namespace is clean and documented, no private names of other
packages are imported, and the declared lower bounds are the tested pins."""

import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import tomllib
import types

import pytest

import contdepth as cd
from contdepth._optional import missing_message, progress_bar, require


ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "contdepth"
OWN_MODULES = {"datasets", "families", "losses", "experiments"}

# Runs in a fresh interpreter where matplotlib, scikit-learn and tqdm cannot be
# imported, as after `pip install contdepth` without extras.
_NO_EXTRAS = textwrap.dedent(
    """
    import importlib.abc, sys, warnings

    BLOCKED = ("matplotlib", "sklearn", "tqdm")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, Block())

    import jax, jax.numpy as jnp, jax.random as jr
    jax.config.update("jax_enable_x64", True)
    import contdepth as cd
    from contdepth._optional import progress_bar

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded

    # A linear field: the Jacobian of N Euler steps is exactly (I + h A)^N.
    a = jnp.array([[0.0, 1.0], [-2.0, 0.5]])
    model = cd.EulerResNet(cd.LinearField(a), num_steps=2, horizon=1.0)
    y = jnp.array([0.3, -0.2])
    step = jnp.eye(2) + 0.5 * a
    assert jnp.allclose(model(y), step @ step @ y)
    assert jnp.allclose(cd.jacobian(model, y), step @ step)

    def message(fn):
        try:
            fn()
        except ImportError as e:
            return str(e)
        raise AssertionError(f"{fn} did not raise ImportError")

    region = cd.stability_region("euler", resolution=5)
    print("PLOT:", message(region.plot))
    print("DATASETS:", message(cd.datasets.digits))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with progress_bar(total=3, disable=False) as bar:
            bar.update(3)
            bar.set_postfix(loss=1.0)
    assert bar.n == 3
    print("PROGRESS:", [str(w.message) for w in caught])
    """
)


@pytest.fixture(scope="module")
def no_extras_output() -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_EXTRAS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize(
    "label, extra, package",
    [
        ("PLOT", "plot", "matplotlib"),
        ("DATASETS", "datasets", "scikit-learn"),
        ("PROGRESS", "progress", "tqdm"),
    ],
)
def test_core_install_works_and_names_the_extra(no_extras_output, label, extra, package):
    (line,) = [ln for ln in no_extras_output.splitlines() if ln.startswith(label + ":")]
    assert f'pip install "contdepth[{extra}]"' in line
    assert f"`{package}`" in line


def test_require_imports_or_names_the_extra():
    assert require("json", extra="plot").__name__ == "json"
    with pytest.raises(ImportError, match=re.escape('pip install "contdepth[plot]"')):
        require("matplotlib_not_a_module.pyplot", extra="plot")
    assert "`scikit-learn`" in missing_message("sklearn.datasets", "datasets")


def test_disabled_progress_bar_counts_without_tqdm_calls():
    with progress_bar(total=5, initial=2, disable=True) as bar:
        bar.update(3)
        bar.set_postfix(loss=0.5)
    assert bar.n == 5


def _documented_names() -> set[str]:
    names = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        names |= set(re.findall(r"^::: contdepth\.(\w+)\s*$", page.read_text(), re.M))
    return names


def test_public_namespace_is_owned_and_documented():
    public = {n for n in dir(cd) if not n.startswith("_")}
    documented = _documented_names()
    problems = []
    for name in sorted(public):
        obj = getattr(cd, name)
        if isinstance(obj, types.ModuleType):
            if name not in OWN_MODULES or obj.__name__ != f"contdepth.{name}":
                problems.append(f"stray module cd.{name} ({obj.__name__})")
        elif callable(obj) and not obj.__module__.startswith("contdepth"):
            problems.append(f"cd.{name} is defined in {obj.__module__}")
        if name not in documented:
            problems.append(f"cd.{name} is missing from docs/api/*.md")
    problems += [f"docs/api documents cd.{n}, which does not exist" for n in
                 sorted(documented - public)]
    assert not problems, "\n".join(problems)
    assert cd.CheckpointError is not None and cd.CheckpointMismatchError is not None
    assert isinstance(cd.__version__, str)


def _private_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [a.name for a in node.names], []
        else:
            continue
        for module in modules:
            if module.split(".")[0] == "contdepth":
                continue
            if any(part.startswith("_") for part in module.split(".")) or any(
                n.startswith("_") for n in names
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module} {names}")
    return found


def test_no_private_names_of_other_packages():
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "\n".join(found)


def test_lower_bounds_are_the_tested_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for req in project["dependencies"]:
        name, op, version = re.fullmatch(r"([\w-]+)(>=)([\w.]+)", req).groups()
        bounds[name] = version
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(bounds) == set(pins) == {
        "jax", "jaxlib", "equinox", "diffrax", "optax", "lineax", "jaxtyping", "numpy"
    }
    for name, pin in pins.items():
        assert pin.startswith(bounds[name]), (name, bounds[name], pin)
    for heavy in ("matplotlib", "scikit-learn", "tqdm"):
        assert not any(req.startswith(heavy) for req in project["dependencies"])
