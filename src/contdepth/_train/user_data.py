"""Your own classification data for `contdepth train --data PATH`: `.npz` or `.csv`.

- `.npz`: arrays `features` `(n, d)` (floating or integer) and `labels` `(n,)` integer
  class indices; the keys `x` / `y` are accepted too.
- `.csv`: numeric, comma-separated, one sample per row; a header row is detected
  automatically (a first row that is not all numbers); the labels are the last column
  unless `label_column` picks another (an int index, negative counting from the end,
  or a header name).

Every problem is a `UserDataError` (a `ValueError`) whose message names the file and,
where it applies, the row or column, so the command line can print it as one line.
"""

import csv
import os
import pathlib

import numpy as np


NPZ_KEYS = (("features", "labels"), ("x", "y"))


class UserDataError(ValueError):
    """Unusable user data: a missing or unreadable file, wrong keys or columns,
    non-numeric or non-finite values, non-integer or out-of-range labels."""


def _where(path) -> str:
    return f"--data {str(path)!r}"


def _integer_labels(labels: np.ndarray, where: str, what: str) -> np.ndarray:
    """Labels as int64, refusing fractional, non-finite or non-numeric values."""
    if labels.dtype == np.bool_:
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.floating):
        raise UserDataError(
            f"{where}: {what} must hold integer class indices, got dtype "
            f"{labels.dtype}."
        )
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if bad.size:
        raise UserDataError(
            f"{where}: {what} must hold integer class indices 0, 1, ..., C-1, got "
            f"{float(labels[bad[0]])!r} at sample {int(bad[0])} ({bad.size} of "
            f"{labels.size} labels are not integers). Pick the label column with "
            "--label-column."
        )
    return labels.astype(np.int64)


def _load_npz(path: pathlib.Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            for fkey, lkey in NPZ_KEYS:
                if fkey in keys and lkey in keys:
                    try:
                        x, y = archive[fkey], archive[lkey]
                    except ValueError as e:  # object arrays need pickles: refused
                        raise UserDataError(
                            f"{where}: cannot read its arrays: {e}"
                        ) from e
                    break
            else:
                raise UserDataError(
                    f"{where}: an .npz file needs the arrays 'features' (n, d) and "
                    f"'labels' (n,) (or 'x' and 'y'); it holds {keys or 'no arrays'}."
                )
    except UserDataError:
        raise
    except Exception as e:  # not a zip, truncated, ...
        raise UserDataError(f"{where}: not a readable .npz file ({e}).") from e
    what = f"'{lkey}'"
    if x.ndim != 2:
        raise UserDataError(
            f"{where}: '{fkey}' must be a 2-D array (samples, features), got shape "
            f"{x.shape}" + (" (flatten each sample first)." if x.ndim > 2 else ".")
        )
    if y.ndim != 1:
        raise UserDataError(
            f"{where}: {what} must be a 1-D array of class indices, got shape "
            f"{y.shape}."
        )
    if x.shape[0] != y.shape[0]:
        raise UserDataError(
            f"{where}: '{fkey}' has {x.shape[0]} samples but {what} has {y.shape[0]}."
        )
    if not (
        np.issubdtype(x.dtype, np.floating)
        or np.issubdtype(x.dtype, np.integer)
        or x.dtype == np.bool_
    ):
        raise UserDataError(f"{where}: '{fkey}' must be numeric, got dtype {x.dtype}.")
    return x, _integer_labels(y, where, what)


def _parse_float(text: str) -> float:
    return float(text)  # ValueError for non-numbers; "nan"/"inf" parse (refused later)


def _is_numeric_row(row: list[str]) -> bool:
    try:
        [_parse_float(v) for v in row]
    except ValueError:
        return False
    return True


def _label_index(label_column, header: list[str] | None, ncols: int, where: str) -> int:
    text = "-1" if label_column is None else str(label_column).strip()
    try:
        index = int(text)
    except ValueError:
        if header is None:
            raise UserDataError(
                f"{where}: --label-column {text!r} is a column name, but the file has "
                "no header row; pass a column index (0-based, negative counts from "
                "the end)."
            ) from None
        names = [h.strip() for h in header]
        if text not in names:
            raise UserDataError(
                f"{where}: --label-column {text!r} is not a column; the header has "
                f"{names}."
            ) from None
        if names.count(text) > 1:
            raise UserDataError(
                f"{where}: --label-column {text!r} names {names.count(text)} columns; "
                "pass its index instead."
            ) from None
        return names.index(text)
    if not -ncols <= index < ncols:
        raise UserDataError(
            f"{where}: --label-column {index} is out of range for {ncols} columns "
            f"(use 0..{ncols - 1}, or -{ncols}..-1 counting from the end)."
        )
    return index % ncols


def _load_csv(path: pathlib.Path, where: str, label_column):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [
                (line, row)
                for line, row in enumerate(csv.reader(f), start=1)
                if row and any(cell.strip() for cell in row)
            ]
    except UnicodeDecodeError as e:
        raise UserDataError(f"{where}: not a UTF-8 text .csv file ({e}).") from e
    if not rows:
        raise UserDataError(f"{where}: the file is empty.")
    header = None
    if not _is_numeric_row(rows[0][1]):
        header = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise UserDataError(f"{where}: the file has a header row but no data rows.")
    ncols = len(header) if header is not None else len(rows[0][1])
    if ncols < 2:
        raise UserDataError(
            f"{where}: needs at least two comma-separated columns (features and a "
            f"label), got {ncols}."
        )
    values = np.empty((len(rows), ncols), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != ncols:
            raise UserDataError(
                f"{where}: line {line} has {len(row)} columns, expected {ncols}."
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = _parse_float(cell)
            except ValueError:
                raise UserDataError(
                    f"{where}: line {line}, column {j}: {cell.strip()!r} is not a "
                    "number (only numeric CSV data is read; a header is allowed as "
                    "the first row only)."
                ) from None
    index = _label_index(label_column, header, ncols, where)
    name = f"column {index}" + (f" ({header[index].strip()!r})" if header else "")
    labels = _integer_labels(values[:, index], where, f"the label {name}")
    features = np.delete(values, index, axis=1)
    return features, labels


def load_user_data(
    path: str | os.PathLike,
    *,
    label_column: str | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read `(features, labels)` from a `.npz` or `.csv` file (see the module doc).

    **Returns:** NumPy `features` of shape `(n, d)` (float64) and `labels` `(n,)`
    (int64), checked: finite features, integer labels.

    **Raises:** `UserDataError` naming the file (and row/column) on any problem.
    """
    path = pathlib.Path(path)
    where = _where(path)
    if not path.exists():
        raise UserDataError(f"{where}: no such file.")
    if not path.is_file():
        raise UserDataError(f"{where}: not a file.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if label_column is not None:
            raise UserDataError(
                f"{where}: --label-column applies to .csv files only; an .npz file "
                "names its labels array 'labels' (or 'y')."
            )
        x, y = _load_npz(path, where)
    elif suffix == ".csv":
        try:
            x, y = _load_csv(path, where, label_column)
        except OSError as e:
            raise UserDataError(f"{where}: cannot read it ({e.strerror or e}).") from e
    else:
        raise UserDataError(
            f"{where}: unknown file type {path.suffix or '(no extension)'!r}; pass an "
            ".npz file (arrays 'features' and 'labels') or a numeric .csv file."
        )
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        raise UserDataError(f"{where}: holds no samples.")
    if x.shape[1] == 0:
        raise UserDataError(f"{where}: holds no feature columns.")
    finite = np.isfinite(x)
    if not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise UserDataError(
            f"{where}: features must be finite, got {float(x[i, j])} at sample {i}, "
            f"feature {j} ({int((~finite).sum())} non-finite values)."
        )
    return x, y


def check_class_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Labels must be class indices `0..num_classes-1`; the message says so."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        lo, hi = int(labels.min()), int(labels.max())
        raise UserDataError(
            f"{where}: labels must be class indices in 0..{num_classes - 1} "
            f"(--num-classes {num_classes}), got {int(labels[bad[0]])} at sample "
            f"{int(bad[0])} ({bad.size} of {labels.size} outside; labels span "
            f"[{lo}, {hi}]). Remap your classes to 0, 1, ..., C-1"
            + (f" or pass --num-classes {hi + 1}." if lo >= 0 else ".")
        )


def split(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    test_fraction: float,
    seed: int,
    where: str,
):
    """A seeded random train/test split: `((x_train, y_train), (x_test, y_test))`.

    The test set is the first `round(n * test_fraction)` (at least 1) entries of
    `np.random.default_rng(seed).permutation(n)`, the training set the rest.
    """
    n = features.shape[0]
    if not 0 < test_fraction < 1:  # also refuses NaN
        raise UserDataError(f"--test-fraction must lie in (0, 1), got {test_fraction}.")
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise UserDataError(
            f"{where}: --test-fraction {test_fraction} leaves no training sample out "
            f"of {n}; lower it or add samples."
        )
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return (features[tr], labels[tr]), (features[te], labels[te])
