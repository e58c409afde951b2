"""The `contdepth` command line: `contdepth sweep` (the main job) and `contdepth train`."""

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.random as jr
import optax

from . import datasets
from ._train.evaluate import evaluate
from ._train.train import train
from ._zoo import count_parameters, make_classifier, MODEL_NAMES


DATASETS = {
    "digits": lambda key: datasets.digits(),
    "moons": lambda key: datasets.two_moons(1000, 0.1, key=key),
    "spirals": lambda key: datasets.spirals(1000, key=key),
}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; floats shown with 4 significant digits."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cmd_train(args) -> int:
    key = jr.PRNGKey(args.seed)
    k_data, k_model, k_train = jr.split(key, 3)
    train_data, test_data = DATASETS[args.dataset](k_data)
    rows = []
    for name in args.model:
        model = make_classifier(
            name,
            num_features=train_data[0].shape[1],
            num_classes=int(train_data[1].max()) + 1,
            dim=args.dim,
            width=args.width,
            depth=args.depth,
            horizon=args.horizon,
            key=k_model,
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
        rows.append(
            [name, args.dataset, count_parameters(model), args.depth, args.horizon,
             tr["loss"], tr["accuracy"], te["accuracy"], history["seconds"]]
        )
    print()
    print(markdown_table(
        ["model", "dataset", "params", "depth", "horizon", "train loss", "train acc",
         "test acc", "seconds"],
        rows,
    ))
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 8,16,32; got {text!r}"
        ) from None


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
        progress=not args.no_progress,
    )
    paths = write_outputs(result, args.out)
    print()
    print(result.sweep.to_markdown())
    print()
    print(
        f"trained in {result.train_seconds:.1f} s, swept in {result.sweep_seconds:.1f} s; "
        f"wrote {paths['json']}, {paths['png']}, {paths['markdown']}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contdepth",
        description="Continuous-depth ResNets and Neural ODEs: train, sweep depth, inspect.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train classifiers and print a result table")
    p.add_argument("--model", nargs="+", choices=MODEL_NAMES, default=["euler"],
                   help="one or more depth models to train and compare")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    p.add_argument("--steps", type=int, default=500, help="optimiser steps")
    p.add_argument("--depth", type=int, default=8, help="number of steps/layers N")
    p.add_argument("--horizon", type=float, default=1.0, help="ODE horizon T")
    p.add_argument("--dim", type=int, default=64, help="state dimension")
    p.add_argument("--width", type=int, default=64, help="hidden width of the field")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "sweep",
        help="train an Euler ResNet on digits, then sweep its depth N with T fixed",
        description="Train a small EulerResNet classifier on digits (N = --train-depth, "
        "T = --horizon), re-evaluate the same learned field at every N in --steps and "
        "as a Neural ODE, and print test accuracy and the spectrum of dy_N/dy_0 per N "
        "with untrained baselines. Saves sweep.json, sweep.png and sweep.md.",
    )
    p.add_argument("--steps", type=_int_list, default=[8, 16, 32, 64, 128, 256, 512, 1024],
                   help="depths N to evaluate, comma-separated")
    p.add_argument("--train-depth", type=int, default=8, help="depth N used in training")
    p.add_argument("--train-steps", type=int, default=500, help="optimiser steps")
    p.add_argument("--horizon", type=float, default=1.0, help="ODE horizon T")
    p.add_argument("--dim", type=int, default=32, help="state dimension d")
    p.add_argument("--width", type=int, default=64, help="hidden width of the field")
    p.add_argument("--num-states", type=int, default=8,
                   help="test images whose Jacobians are measured (worst case reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="contdepth-out", help="output directory")
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "x64", False):
        jax.config.update("jax_enable_x64", True)
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        parser.exit(2, f"contdepth {args.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
