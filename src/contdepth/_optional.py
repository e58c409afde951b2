"""Optional dependencies: plotting (`matplotlib`), the digits dataset (`scikit-learn`)
and progress bars (`tqdm`) are extras, imported only when used.

The core install (`pip install contdepth`) needs none of them; each feature that does
imports it through `require`, which names the extra to
install when it is missing. Progress bars are a convenience that is on by default
(`progress=True`), so a missing `tqdm` never stops a run: the bar is dropped with one
warning naming the extra, and `progress=False` silences it.
"""

import importlib
import warnings
from types import ModuleType


# The import name of each optional dependency -> (its PyPI name, the extra that has it).
_EXTRAS = {
    "matplotlib": ("matplotlib", "plot"),
    "sklearn": ("scikit-learn", "datasets"),
    "tqdm": ("tqdm", "progress"),
}


def missing_message(module: str, extra: str) -> str:
    """The error text for an optional dependency that is not installed."""
    top = module.split(".")[0]
    package = _EXTRAS.get(top, (top, extra))[0]
    return (
        f"This feature of contdepth needs `{package}`, which is not installed (it is "
        f'an optional dependency). Install it with `pip install "contdepth[{extra}]"` '
        f'(or `pip install {package}`); `pip install "contdepth[all]"` installs every '
        "optional dependency."
    )


def require(module: str, *, extra: str) -> ModuleType:
    """Import the optional dependency `module`, or raise an `ImportError` that names
    the extra providing it.

    **Arguments:**

    - `module`: the dotted module to import, e.g. `"matplotlib.pyplot"`.
    - `extra`: the contdepth extra that installs it: `"plot"`, `"datasets"` or
        `"progress"`.

    **Returns:**

    The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(missing_message(module, extra)) from e


class _NoBar:
    """The part of `tqdm`'s interface contdepth uses, doing nothing."""

    def __init__(self, *args, initial: int = 0, **kwargs):
        del args, kwargs
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        del args, kwargs

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(*args, disable: bool = False, **kwargs):
    """`tqdm.auto.tqdm(*args, disable=disable, **kwargs)`, or a bar that does nothing
    when `disable` is true or `tqdm` is not installed (then with one `UserWarning`
    naming the `progress` extra: a progress bar is never worth failing a run for)."""
    if disable:
        return _NoBar(*args, **kwargs)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            missing_message("tqdm", "progress")
            + " Continuing without a progress bar; pass `progress=False` to silence "
            "this warning.",
            UserWarning,
            stacklevel=2,
        )
        return _NoBar(*args, **kwargs)
    return tqdm(*args, disable=disable, **kwargs)
