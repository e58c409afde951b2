"""Build the notebooks from their reviewable sources.

Each notebook `NN_name.ipynb` is generated from `sources/NN_name.py`, a plain Python
file in the "percent" format: a line `# %%` starts a code cell, `# %% [markdown]` a
markdown cell whose lines are comments (`# ` is stripped). The `.ipynb` files are
stored without outputs; `tests/test_notebooks.py` executes them and checks they match
their sources.

    python notebooks/_build.py           # (re)write every .ipynb
    python notebooks/_build.py --check   # exit 1 if any .ipynb is out of date

A source file also runs as a script (`MPLBACKEND=Agg python sources/01_....py` from
this folder), which is the quickest way to time or debug it.
"""

import argparse
import pathlib
import sys

import nbformat


HERE = pathlib.Path(__file__).resolve().parent
SOURCES = HERE / "sources"


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into `(kind, source)` cells, kind in
    `{"code", "markdown"}`."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# %%"):
            kind = "markdown" if "[markdown]" in stripped else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif stripped and not stripped.startswith("#"):
            raise ValueError(f"code before the first `# %%` marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        source = "\n".join(lines).strip("\n")
        if source:
            out.append((kind, source))
    return out


def build(source: pathlib.Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) for one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(parse_cells(source.read_text(encoding="utf-8"))):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        cell["id"] = f"{source.stem[:2]}-{i:02d}"  # stable ids: rebuilding is a no-op
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def sources() -> list[pathlib.Path]:
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    opts = parser.parse_args(argv)
    stale = []
    for src in sources():
        target = HERE / f"{src.stem}.ipynb"
        text = render(build(src))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            stale.append(target.name)
            if not opts.check:
                target.write_text(text, encoding="utf-8")
    if opts.check and stale:
        print("out of date (run `python notebooks/_build.py`):", ", ".join(stale))
        return 1
    for name in stale:
        print("wrote", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
