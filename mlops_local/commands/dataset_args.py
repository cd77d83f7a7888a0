"""Dataset options shared by `train` and `sweep`: one definition, one parser."""

from __future__ import annotations

import argparse

from mlops_local.errors import UserError
from mlops_local.ml.catalog import parse_param_args
from mlops_local.ml.datasets import BUILTINS, DEFAULT_DATASET
from mlops_local.ml.types import DatasetSpec


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --target, --features, --dataset-option."""
    parser.add_argument("--dataset", default=DEFAULT_DATASET, metavar="NAME|PATH",
                        help=f"built-in ({', '.join(BUILTINS)}) or a CSV/Parquet file "
                             f"(default {DEFAULT_DATASET})")
    parser.add_argument("--target", metavar="COL",
                        help="target column (required for files; built-ins have one)")
    parser.add_argument("--features", metavar="A,B",
                        help="comma-separated feature columns (default: all others)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="K=V",
                        help="built-in dataset option, e.g. n_samples=500 for friedman1 (repeatable)")


def comma_list(value: str | None, option: str, what: str) -> tuple[str, ...] | None:
    """``a, b`` -> ("a", "b"); None stays None; an empty list is a UserError naming the option."""
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise UserError(f"{option} is empty; give comma-separated {what} or leave it out")
    return items


def dataset_spec_from_args(args: argparse.Namespace) -> DatasetSpec:
    """The DatasetSpec the dataset options describe (validated later, before any run exists)."""
    options = parse_param_args(args.dataset_option) if args.dataset_option else {}
    return DatasetSpec(args.dataset, target=args.target,
                       features=comma_list(args.features, "--features", "column names"), options=options)
