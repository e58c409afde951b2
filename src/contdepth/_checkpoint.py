"""Checkpoints: `cd.save` / `cd.load`.

A checkpoint is one file:

    MAGIC | header length (8 bytes, little endian) | JSON header | payload | SHA-256

The payload is `equinox.tree_serialise_leaves` of the model, then of the optimiser
state (if any), then of private extras (the training history). The JSON header records
the library versions, the step, user metadata, and for every saved tree its class, its
static hyper-parameters (`eqx.field(static=True)` values) and the path, shape and dtype
of every leaf, so a checkpoint can be checked against `like` *before* any array is
read. The trailing SHA-256 covers every byte before it: a flipped bit or a truncated
file is detected, never loaded. Writes go to a temporary file in the same directory
that is then `os.replace`d over the target, so a crash mid-save leaves the previous
file intact.
"""

import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import secrets
import struct
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np


MAGIC = b"contdepth-checkpoint\n"
FORMAT_VERSION = 1
_LEN = struct.Struct("<Q")
_DIGEST_BYTES = 32
_TREES = ("model", "opt_state", "extra")
_CLASS = ".__class__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: not a checkpoint, truncated, corrupted,
    or written by a newer format. (A `ValueError`.)"""


class CheckpointMismatchError(ValueError):
    """A readable checkpoint whose contents do not fit `like`: another model class,
    other hyper-parameters, or leaves of other shapes or dtypes. (A `ValueError`.)"""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What [`contdepth.load`][] returns.

    - `model`: the saved model, with the structure and static fields of `like` and
        the saved arrays.
    - `opt_state`: the saved optimiser state if `opt_state_like` was passed, else
        `None`.
    - `step`: the saved step (an int) or `None`.
    - `metadata`: the saved JSON metadata (a dict; empty if none was given).
    - `header`: the full JSON header (versions, tree descriptions, ...).
    """

    model: Any
    opt_state: Any
    step: int | None
    metadata: dict
    header: dict


def _library_versions() -> dict:
    import importlib.metadata

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            return None

    return {name: version(name) for name in ("contdepth", "jax", "equinox")}


def _jsonable(value) -> Any:
    """Static hyper-parameters as JSON; anything exotic by its type name."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _jsonable(value.item())
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    return f"<{type(value).__name__}>"


def _hyperparameters(tree, path: str, out: dict) -> None:
    # Static fields are not leaves, so `like` supplies them on load: record them to
    # refuse a `like` built with other hyper-parameters (depth, horizon, ...).
    if isinstance(tree, eqx.Module):
        out[f"{path}{_CLASS}"] = type(tree).__name__
        for field in dataclasses.fields(tree):
            value = getattr(tree, field.name, None)
            name = f"{path}.{field.name}"
            if field.metadata.get("static", False):
                out[name] = _jsonable(value)
            else:
                _hyperparameters(value, name, out)
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            _hyperparameters(v, f"{path}[{i}]", out)
    elif isinstance(tree, dict):
        for k, v in tree.items():
            _hyperparameters(v, f"{path}[{k!r}]", out)


def _leaf_spec(path, leaf) -> dict:
    name = jtu.keystr(path)
    if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic)):
        return {"path": name, "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)}
    if isinstance(leaf, (bool, int, float, complex)):
        return {"path": name, "python": type(leaf).__name__}
    return {"path": name, "static": _jsonable(leaf)}


def describe(tree) -> dict:
    """The JSON description of a tree stored in the header: class, hyper-parameters,
    and the path, shape and dtype of every leaf."""
    hyper: dict = {}
    _hyperparameters(tree, "", hyper)
    leaves = jtu.tree_flatten_with_path(tree)[0]
    return {
        "class": type(tree).__name__,
        "hyperparameters": hyper,
        "leaves": [_leaf_spec(p, leaf) for p, leaf in leaves],
    }


def _first_difference(saved: dict, wanted: dict, what: str) -> str | None:
    if saved["class"] != wanted["class"]:
        return (
            f"the checkpoint's {what} is a {saved['class']}, but `like` is a "
            f"{wanted['class']}"
        )
    sh, wh = saved["hyperparameters"], wanted["hyperparameters"]
    keys = sorted(set(sh) | set(wh))
    # Structure first (which module sits where), then exact static values (sizes,
    # flags), then floats (often derived, e.g. `alpha='nonexpansive'`).
    classes = [k for k in keys if k.endswith(_CLASS)]
    exact = [k for k in keys if not isinstance(sh.get(k, wh.get(k)), float)]
    for key in classes + exact + keys:
        if key in sh and key in wh and sh[key] == wh[key]:
            continue
        if key.endswith(_CLASS):
            where = what + key[: -len(_CLASS)]
            return (
                f"`{where}` is {sh.get(key, '(nothing)')} in the checkpoint but "
                f"{wh.get(key, '(nothing)')} in `like`"
            )
        if key in sh and key in wh:
            return (
                f"hyper-parameter `{what}{key}` is {sh[key]!r} in the checkpoint but "
                f"{wh[key]!r} in `like`"
            )
        side = "checkpoint" if key in sh else "`like`"
        return f"hyper-parameter `{what}{key}` exists only in the {side}"
    sl, wl = saved["leaves"], wanted["leaves"]
    for s, w in zip(sl, wl):
        if s != w:

            def show(d):
                name = d["path"] or "<root>"
                if "shape" in d:
                    return f"{name} of shape {tuple(d['shape'])} {d['dtype']}"
                return f"{name} = {d.get('python', d.get('static'))}"

            hint = ""
            if s.get("dtype") == "float64" and w.get("dtype") == "float32":
                hint = (
                    " (float64 checkpoints need `jax.config.update('jax_enable_x64', "
                    "True)` and a float64 `like`)"
                )
            return (
                f"leaf `{what}{s['path']}` differs: checkpoint has {show(s)}, `like` "
                f"has {show(w)}{hint}"
            )
    if len(sl) != len(wl):
        return f"the checkpoint's {what} has {len(sl)} leaves but `like` has {len(wl)}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_path(path) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a str or os.PathLike file name, got {type(path).__name__}."
        )
    return pathlib.Path(path)


def _serialise(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable (POSIX); best effort elsewhere
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover
        pass


def save(
    path: str | os.PathLike,
    model,
    opt_state=None,
    step: int | None = None,
    metadata: dict | None = None,
) -> pathlib.Path:
    """Save a model (and optionally an optimiser state) to one checkpoint file,
    atomically.

    **Arguments:**

    - `path`: the file to write; its directory must exist. An existing file is
        replaced only once the new one is completely written (temporary file +
        `os.replace`): a crash or a full disk mid-save leaves it as it was.
    - `model`: any Equinox module / PyTree of arrays.
    - `opt_state`: an optax state to store with it, or `None`.
    - `step`: the training step (an int >= 0), or `None`.
    - `metadata`: a JSON-serialisable dict stored in the header, or `None`.

    **Returns:**

    The path written (a `pathlib.Path`).
    """
    return save_with_extra(path, model, opt_state, step, metadata, None)


def save_with_extra(path, model, opt_state, step, metadata, extra) -> pathlib.Path:
    """`save`, plus a private `extra` tree (e.g. the training history)."""
    path = _check_path(path)
    if model is None:
        raise TypeError("`model` must be a model (a PyTree of arrays), got None.")
    if not path.parent.is_dir():
        raise ValueError(
            f"`path` {str(path)!r}: the directory {str(path.parent)!r} does not exist."
        )
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(
                f"`step` must be an int >= 0 or None, got {_short(step)} of type "
                f"{type(step).__name__}."
            )
        if step < 0:
            raise ValueError(f"`step` must be an int >= 0 or None, got {step}.")
        step = int(step)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(
            f"`metadata` must be a dict or None, got {type(metadata).__name__}."
        )
    problem = None
    try:
        # Stored as JSON: refuse what JSON would silently change (tuples, int keys).
        if json.loads(json.dumps(metadata, allow_nan=False)) != metadata:
            problem = "JSON would change it (tuples become lists, keys become str)"
    except (TypeError, ValueError, RecursionError) as e:
        problem = str(e)
    if problem is not None:
        raise TypeError(
            "`metadata` must be plain JSON data (str keys; str, finite numbers, bools, "
            f"None, lists and dicts), got {_short(metadata)}: {problem}."
        )
    trees = {"model": model, "opt_state": opt_state, "extra": extra}
    chunks, descriptions = [], {}
    for name in _TREES:
        tree = trees[name]
        if tree is None:
            descriptions[name] = None
            continue
        descriptions[name] = describe(tree)
        data = _serialise(tree)
        descriptions[name]["bytes"] = len(data)
        chunks.append(data)
    payload = b"".join(chunks)
    header = {
        "format": FORMAT_VERSION,
        "versions": _library_versions(),
        "step": step,
        "metadata": metadata,
        "trees": descriptions,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header_bytes = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + _LEN.pack(len(header_bytes)) + header_bytes + payload
    _atomic_write(path, body + hashlib.sha256(body).digest())
    return path


def read_header(path: str | os.PathLike) -> tuple[dict, bytes]:
    """Read and verify a checkpoint file; returns `(header, payload)`. Raises
    `CheckpointError` for a missing, truncated, corrupted or foreign file."""
    path = _check_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.") from None
    where = f"checkpoint {str(path)!r}"
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CheckpointError(f"{where} is truncated ({len(data)} bytes).")
        raise CheckpointError(
            f"{where} is not a contdepth checkpoint (it does not start with "
            f"{MAGIC!r}); write checkpoints with `cd.save`."
        )
    start = len(MAGIC) + _LEN.size
    if len(data) < start:
        raise CheckpointError(f"{where} is truncated ({len(data)} bytes).")
    (header_len,) = _LEN.unpack(data[len(MAGIC) : start])
    if len(data) < start + header_len:
        raise CheckpointError(
            f"{where} is truncated: {len(data)} bytes, but its header alone needs "
            f"{start + header_len}."
        )
    try:
        header = json.loads(data[start : start + header_len])
        payload_bytes = int(header["payload_bytes"])
        fmt = int(header["format"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{where} is corrupted: unreadable header ({e})."
        ) from None
    expected = start + header_len + payload_bytes + _DIGEST_BYTES
    if len(data) < expected:
        raise CheckpointError(
            f"{where} is truncated: {len(data)} bytes of the {expected} its header "
            "announces (an interrupted copy?). Use an earlier checkpoint."
        )
    if len(data) > expected:
        raise CheckpointError(
            f"{where} is corrupted: {len(data) - expected} unexpected trailing bytes."
        )
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(
            f"{where} is corrupted: its SHA-256 checksum does not match its contents. "
            "Use an earlier checkpoint."
        )
    if fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format {fmt}, newer than this contdepth reads "
            f"({FORMAT_VERSION}): upgrade contdepth."
        )
    return header, data[start + header_len : -_DIGEST_BYTES]


def _deserialise(stream, tree_like, what: str):
    try:
        return eqx.tree_deserialise_leaves(stream, tree_like)
    except Exception as e:  # checksum passed, so this is a like/content mismatch
        raise CheckpointMismatchError(
            f"Could not restore the {what} from the checkpoint into `like`: {e}"
        ) from e


def load(path: str | os.PathLike, like, *, opt_state_like=None) -> Checkpoint:
    """Load a checkpoint written by [`contdepth.save`][].

    The file is verified (format, length, SHA-256) and its recorded structure compared
    with `like` before any array is read; every failure is a `ValueError` saying what
    is wrong.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a model of the same class and hyper-parameters as the saved one (e.g.
        the freshly constructed model, or `eqx.filter_eval_shape(...)` of its
        constructor); it supplies the structure, the saved file the arrays.
    - `opt_state_like`: an optimiser state of the same structure as the saved one
        (e.g. `optimizer.init(eqx.filter(model, eqx.is_inexact_array))`) to restore
        it too; `None` skips it.

    **Returns:**

    A [`contdepth.Checkpoint`][] with `.model`, `.opt_state`, `.step`, `.metadata`.

    **Raises:**

    `FileNotFoundError` if there is no file; `ValueError` if the file is not a
    contdepth checkpoint, is truncated or corrupted (checksum mismatch), or was saved
    from a model (or optimiser state) of another class, other hyper-parameters, or
    other leaf shapes or dtypes than `like`.
    """
    return load_with_extra(path, like, opt_state_like, None)[0]


def load_with_extra(path, like, opt_state_like, extra_like) -> tuple[Checkpoint, Any]:
    """`load`, plus the private `extra` tree if `extra_like` is given."""
    if like is None:
        raise TypeError(
            "`like` must be a model with the saved structure (e.g. the freshly built "
            "model), got None."
        )
    header, payload = read_header(path)
    where = f"checkpoint {str(path)!r}"
    trees = header["trees"]
    likes = {"model": like, "opt_state": opt_state_like, "extra": extra_like}
    for name in ("model", "opt_state"):
        if likes[name] is None:
            continue
        if trees.get(name) is None:
            raise CheckpointMismatchError(f"{where} holds no {name} to load.")
        diff = _first_difference(trees[name], describe(likes[name]), name)
        if diff is not None:
            argument = "like" if name == "model" else f"{name}_like"
            raise CheckpointMismatchError(
                f"{where} does not match `{argument}`: {diff}. Build `{argument}` with "
                "the configuration the checkpoint was saved from (saved "
                "hyper-parameters: see `cd.load(...).header`)."
            )
    stream = io.BytesIO(payload)
    out = {}
    for name in _TREES:
        if trees.get(name) is None:
            out[name] = None
            continue
        size = trees[name]["bytes"]
        if likes[name] is None:
            stream.seek(size, io.SEEK_CUR)
            out[name] = None
            continue
        start = stream.tell()
        out[name] = _deserialise(stream, likes[name], name)
        if stream.tell() - start != size:
            read = stream.tell() - start
            raise CheckpointMismatchError(
                f"{where}: the {name} read {read} bytes, expected {size}."
            )
    return Checkpoint(
        model=out["model"],
        opt_state=out["opt_state"],
        step=header["step"],
        metadata=header["metadata"],
        header=header,
    ), out["extra"]
