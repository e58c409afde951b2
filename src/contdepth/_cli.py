"""The `contdepth` command line: `contdepth sweep` (the main job) and
`contdepth train`."""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from . import datasets
from ._argtypes import int_list
from ._checkpoint import save
from ._cnf.demo import add_parser as add_fit_cnf_parser
from ._demos.spiral import add_parser as add_fit_spiral_parser
from ._experiments.circles import add_parser as add_circles_parser
from ._experiments.resnet_or_ode import add_parser as add_resnet_or_ode_parser
from ._experiments.robustness import add_parser as add_robustness_parser
from ._experiments.scaling_regimes import add_parser as add_scaling_regimes_parser
from ._experiments.smooth_stays_smooth import (
    add_parser as add_smooth_stays_smooth_parser,
)
from ._train.evaluate import evaluate
from ._train.train import train
from ._train.user_data import check_class_range, load_user_data, split
from ._zoo import count_parameters, make_classifier, MODEL_NAMES


DATASETS = {
    "digits": lambda key: datasets.digits(),
    "moons": lambda key: datasets.two_moons(1000, 0.1, key=key),
    "spirals": lambda key: datasets.spirals(1000, key=key),
}

TRAIN_HEADERS = [
    "model",
    "dataset",
    "params",
    "depth",
    "horizon",
    "train loss",
    "train acc",
    "test acc",
    "seconds",
]


class HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Shows every argument's default (except `None`, whose help says what it means)
    and keeps descriptions and epilogs as written."""

    def _get_help_string(self, action):
        if action.default is None or action.help is None:
            return action.help
        listed = isinstance(action.default, (list, tuple))
        if listed and "%(default)" not in action.help:
            sep = " " if action.nargs in ("+", "*") else ","
            shown = sep.join(str(v) for v in action.default).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` defaulting to `HelpFormatter`: every subcommand added with
    `sub.add_parser(...)` (here or in a module's `add_parser(sub)`) shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; floats shown with 4 significant digits."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _train_data(args, key):
    """`(train, test, label, source)`: the two splits as JAX arrays, the name shown in
    the table's dataset column, and a JSON description of where the data came from."""
    if args.data is None:
        if args.label_column is not None:
            raise ValueError("--label-column applies to --data files only.")
        train_data, test_data = DATASETS[args.dataset](key)
        source = {"dataset": args.dataset}
        label = args.dataset
        where = f"--dataset {args.dataset}"
        labels = np.concatenate([np.asarray(train_data[1]), np.asarray(test_data[1])])
    else:
        path = pathlib.Path(args.data)
        x, y = load_user_data(path, label_column=args.label_column)
        where = f"--data {str(path)!r}"
        (x_tr, y_tr), (x_te, y_te) = split(
            x, y, test_fraction=args.test_fraction, seed=args.seed, where=where
        )
        dtype = jnp.float64 if args.x64 else jnp.float32
        train_data = (jnp.asarray(x_tr, dtype), jnp.asarray(y_tr, jnp.int32))
        test_data = (jnp.asarray(x_te, dtype), jnp.asarray(y_te, jnp.int32))
        source = {
            "data": str(path.resolve()),
            "label_column": args.label_column,
            "test_fraction": args.test_fraction,
            "split": "np.random.default_rng(seed).permutation(n): the first "
            "max(1, round(n * test_fraction)) samples are the test set",
        }
        label = path.name
        labels = y
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = max(int(labels.max()) + 1, 1)
    check_class_range(labels, num_classes, where)
    source.update(
        num_train=int(train_data[0].shape[0]),
        num_test=int(test_data[0].shape[0]),
        num_classes=num_classes,
    )
    return train_data, test_data, label, source


def _cmd_train(args) -> int:
    if len(set(args.model)) != len(args.model):
        raise ValueError(f"--model lists a model twice: {' '.join(args.model)}.")
    out = None
    if args.out is not None:
        out = pathlib.Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a directory.")
    key = jr.PRNGKey(args.seed)
    k_data, k_model, k_train = jr.split(key, 3)
    train_data, test_data, data_label, source = _train_data(args, k_data)
    num_features = int(train_data[0].shape[1])
    num_classes = source["num_classes"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows, models = [], {}
    for name in args.model:
        like = {
            "model": name,
            "num_features": num_features,
            "num_classes": num_classes,
            "dim": args.dim,
            "width": args.width,
            "depth": args.depth,
            "horizon": args.horizon,
        }
        model = make_classifier(
            name, **{k: v for k, v in like.items() if k != "model"}, key=k_model
        )
        model, history = train(
            model,
            train_data,
            steps=args.steps,
            batch_size=min(args.batch_size, train_data[0].shape[0]),
            key=k_train,
            optimizer=optax.adam(args.lr),
            progress=not args.no_progress,
        )
        tr = evaluate(model, train_data)
        te = evaluate(model, test_data)
        row = [
            name,
            data_label,
            count_parameters(model),
            args.depth,
            args.horizon,
            tr["loss"],
            tr["accuracy"],
            te["accuracy"],
            float(history["seconds"]),
        ]
        rows.append(row)
        if out is not None:
            dtype = str(jax.tree.leaves(model)[0].dtype)
            metadata = {
                "make_classifier": like,
                "seed": args.seed,
                "dtype": dtype,
                "x64": bool(jax.config.read("jax_enable_x64")),
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "source": source,
                "train": {"loss": tr["loss"], "accuracy": tr["accuracy"]},
                "test": {"loss": te["loss"], "accuracy": te["accuracy"]},
            }
            path = save(out / f"{name}.ckpt", model, step=args.steps, metadata=metadata)
            models[name] = {
                "checkpoint": path.name,
                "make_classifier": like,
                "dtype": dtype,
                "test_loss": te["loss"],
            }
    print()
    print(markdown_table(TRAIN_HEADERS, rows))
    if out is not None:
        results = {
            "headers": TRAIN_HEADERS,
            "rows": [dict(zip(TRAIN_HEADERS, row)) for row in rows],
            "models": models,
            "settings": {
                "seed": args.seed,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "x64": bool(jax.config.read("jax_enable_x64")),
                "num_features": num_features,
                "num_classes": num_classes,
                "dim": args.dim,
                "width": args.width,
                "depth": args.depth,
                "horizon": args.horizon,
                **source,
            },
            "load": "cd.load(DIR / models[name]['checkpoint'], "
            "like=cd.make_classifier(**models[name]['make_classifier'], "
            "key=jax.random.PRNGKey(0))).model",
        }
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print()
        print(
            f"wrote {', '.join(str(out / m['checkpoint']) for m in models.values())} "
            f"and {out / 'results.json'}"
        )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _cmd_sweep(args) -> int:
    from ._sweep.job import learned_depth_sweep, write_outputs

    result = learned_depth_sweep(
        dim=args.dim,
        width=args.width,
        horizon=args.horizon,
        train_depth=args.train_depth,
        steps=args.steps,
        train_steps=args.train_steps,
        num_states=args.num_states,
        seed=args.seed,
        untied=[] if "none" in args.untied else args.untied,
        progress=not args.no_progress,
    )
    paths = write_outputs(result, args.out)
    print()
    print(result.to_markdown())
    print()
    untied = (
        f", untied trained and swept in {result.untied_seconds:.1f} s"
        if result.untied
        else ""
    )
    print(
        f"trained in {result.train_seconds:.1f} s, "
        f"swept in {result.sweep_seconds:.1f} s{untied}; "
        f"wrote {paths['json']}, {paths['png']}, {paths['markdown']}"
    )
    return 0


TRAIN_DESCRIPTION = """\
Train one or more classifiers (Linear -> depth model -> Linear, built by
cd.make_classifier) on a builtin dataset or your own data, and print a Markdown
table of train loss/accuracy and test accuracy per model.

Your own data (--data PATH):
  .npz  arrays 'features' (n, d) and 'labels' (n,) integer class indices
        ('x' and 'y' work too)
  .csv  numeric, comma-separated, one sample per row; a header row is detected
        automatically; labels in the last column unless --label-column says
        otherwise (an index, negative from the end, or a header name)
Labels must be integers 0, 1, ..., C-1 (C = --num-classes, by default the
largest label + 1). A seeded random --test-fraction of the samples is held out
for the test column. Features are used as given (standardise them yourself).

Saving (--out DIR): writes DIR/<model>.ckpt per model and DIR/results.json
(the table rows and every setting). Load a model back in Python with

  import json, jax, contdepth as cd
  info = json.load(open("DIR/results.json"))["models"]["euler"]
  model = cd.load("DIR/euler.ckpt",
                  like=cd.make_classifier(**info["make_classifier"],
                                          key=jax.random.PRNGKey(0))).model

i.e. cd.load(path, like=cd.make_classifier(name, num_features=..., num_classes=...,
dim=..., width=..., depth=..., horizon=..., key=...)) with the saved settings
(any key: the checkpoint supplies the weights). A float64 checkpoint (--x64)
needs jax.config.update("jax_enable_x64", True) before building `like`."""


SWEEP_DESCRIPTION = """\
Train a small EulerResNet classifier on digits (N = --train-depth,
T = --horizon), re-evaluate the same learned field at every N in --steps and
as a Neural ODE, and print test accuracy and the spectrum of dy_N/dy_0 per N
with untrained baselines. With --untied smooth iid, also train untied beta=1
ResNets (one per initialisation), refine them in depth by linear interpolation
and sweep them against their own Neural ODEs, with the weights' regularity in
depth. Saves sweep.json, sweep.png and sweep.md in --out."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="contdepth",
        description="Continuous-depth ResNets and Neural ODEs: train, sweep depth, "
        "inspect.",
        epilog="Run `contdepth COMMAND --help` for a command's flags and their "
        "defaults.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser(
        "train",
        help="train classifiers (builtin or your own data) and print a result table",
        description=TRAIN_DESCRIPTION,
    )
    p.add_argument(
        "--model",
        nargs="+",
        choices=MODEL_NAMES,
        default=["euler"],
        help="one or more depth models to train and compare",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="digits",
        help="builtin dataset (used unless --data is given)",
    )
    source.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="your own data: a .npz or .csv file (see above); default: use --dataset",
    )
    p.add_argument(
        "--label-column",
        metavar="COL",
        default=None,
        help="label column of a --data .csv: 0-based index (negative counts "
        "from the end) or header name; default: the last column",
    )
    p.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        metavar="F",
        help="fraction of --data samples held out for testing (seeded by "
        "--seed); the builtin datasets keep their own fixed split",
    )
    p.add_argument(
        "--num-classes",
        type=_positive_int,
        default=None,
        metavar="C",
        help="number of classes C (labels must lie in 0..C-1); default: "
        "the largest label + 1",
    )
    p.add_argument("--steps", type=int, default=500, help="optimiser steps")
    p.add_argument("--depth", type=int, default=8, help="number of steps/layers N")
    p.add_argument("--horizon", type=float, default=1.0, help="ODE horizon T")
    p.add_argument("--dim", type=int, default=64, help="state dimension")
    p.add_argument("--width", type=int, default=64, help="hidden width of the field")
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="samples per optimiser step (capped at the training set size)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initialisation, batch order and --data split",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="save DIR/<model>.ckpt per model and DIR/results.json (created "
        "if needed); default: save nothing",
    )
    p.add_argument(
        "--x64",
        action="store_true",
        help="compute in float64 (--data features are cast to float64, else float32)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "sweep",
        help="train an Euler ResNet on digits, then sweep its depth N with T fixed",
        description=SWEEP_DESCRIPTION,
    )
    p.add_argument(
        "--steps",
        type=int_list,
        default=[8, 16, 32, 64, 128, 256, 512, 1024],
        help="depths N to evaluate, comma-separated",
    )
    p.add_argument(
        "--train-depth", type=int, default=8, help="depth N used in training"
    )
    p.add_argument("--train-steps", type=int, default=500, help="optimiser steps")
    p.add_argument("--horizon", type=float, default=1.0, help="ODE horizon T")
    p.add_argument("--dim", type=int, default=32, help="state dimension d")
    p.add_argument("--width", type=int, default=64, help="hidden width of the field")
    p.add_argument(
        "--num-states",
        type=int,
        default=8,
        help="test images whose Jacobians are measured (worst case reported)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initialisation, training and Jacobian probes",
    )
    p.add_argument(
        "--untied",
        nargs="+",
        metavar="INIT",
        default=[],
        choices=["smooth", "iid", "interpolated", "none"],
        help="also train untied beta=1 ResNets with these initialisations "
        "(e.g. --untied smooth iid; choices smooth, iid, interpolated, none) "
        "and sweep their depth refinements against their own Neural ODEs, "
        "with the weights' regularity in depth (--steps must be multiples "
        "of --train-depth; roughly doubles the run time); default: none",
    )
    p.add_argument(
        "--out", metavar="DIR", default="contdepth-out", help="output directory"
    )
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sweep)

    # Subcommands defined in other modules: `add_parser(sub)` registers the parser
    # (with `set_defaults(func=run)`, `run(args) -> int`); `main` honours `--x64` and
    # prints a `ValueError`/`TypeError` from `run` as a usage error (exit code 2).
    add_fit_spiral_parser(sub)
    add_smooth_stays_smooth_parser(sub)
    add_scaling_regimes_parser(sub)
    add_resnet_or_ode_parser(sub)
    add_circles_parser(sub)
    add_robustness_parser(sub)
    add_fit_cnf_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "x64", False):
        jax.config.update("jax_enable_x64", True)
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:  # UserDataError is a ValueError
        parser.exit(2, f"contdepth {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
