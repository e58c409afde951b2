"""`argparse` types shared by the `contdepth` subcommands."""

import argparse


def int_list(text: str) -> list[int]:
    """`"2,4,8"` (or space-separated) as `[2, 4, 8]`."""
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 8,16,32; got {text!r}"
        ) from None


def float_list(text: str) -> list[float]:
    """`"0.25,0.5"` (or space-separated) as `[0.25, 0.5]`."""
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. 0.25,0.5; got {text!r}"
        ) from None
