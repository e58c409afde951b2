"""Where every `contdepth` job writes its results: one PNG and one JSON record in an
output directory."""

import json
import os
from collections.abc import Callable
from typing import Any

from ._optional import require


def write_figure_and_record(
    out: str | os.PathLike,
    name: str,
    plot: Callable[[str], Any],
    record: dict[str, Any],
) -> dict[str, Any]:
    """Draw `plot(path)` into `out/NAME.png` and close its figure, then write `record`
    to `out/NAME.json`; `out` is created if needed. Returns `record`.

    **Arguments:**

    - `out`: the output directory.
    - `name`: the file stem shared by the PNG and the JSON.
    - `plot`: draws and saves the figure to the path it is given; returns the
      matplotlib figure.
    - `record`: the JSON-serialisable results.
    """
    plt = require("matplotlib.pyplot", extra="plot")
    os.makedirs(out, exist_ok=True)
    plt.close(plot(os.path.join(out, f"{name}.png")))
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record
