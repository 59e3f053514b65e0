"""Argument types and helpers shared by the recipes' command lines."""

import argparse
import contextlib
import os
import sys


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer. Received: {text!r}"
        )
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive number. Received: {text!r}"
        )
    return value


def study_interval(batches):
    """The study's validation sampling interval: 50 for short runs, else 500."""
    return 50 if batches < 10_000 else 500


def add_dataset_argument(parser):
    parser.add_argument(
        "--dataset",
        choices=["mnist", "fashion_mnist"],
        default="mnist",
        help="fashion_mnist also reads Debian's dataset-fashion-mnist files",
    )


@contextlib.contextmanager
def bad_input_exits():
    """Ends the recipe with `<script>: error: <message>` on bad input.

    A `ValueError` or `OSError` from kbn (a missing data file, an invalid
    configuration) already names what was wrong and the received value; a
    user of a script needs that line, not a traceback.
    """
    try:
        yield
    except (OSError, ValueError) as error:
        program = os.path.basename(sys.argv[0]) or "kbn"
        raise SystemExit(f"{program}: error: {error}") from None
