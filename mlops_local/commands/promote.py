"""`mlops-local promote`: the promotion gate from the command line (the verdict first, then the alias)."""

from __future__ import annotations

import argparse
import logging
import os

from mlops_local.settings import Settings

log = logging.getLogger(__name__)

EXIT_REFUSED = 3  # the gate refused (2: bad input, 1: a service down)
# As in mlops_local.ml.promotion, which `--help` does not import (pandas, scikit-learn, MLflow).
DEFAULT_ALIAS, DEFAULT_METRIC, METRICS = "champion", "r2", ("r2", "rmse", "mae")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote", help="move a registered model's alias to a run only if it beats the current champion",
        description="Score the run's model and the version NAME@ALIAS points at on the same held-out rows "
                    "(the run's test split, rebuilt from its dataset, seed and test size, or every row of "
                    "--dataset), both through the safe loader. The alias moves only when the run wins by "
                    "--min-improvement (or with --force, recorded). The run is registered as a version of "
                    "NAME if it is not one yet; the verdict is logged as a run of the 'promotions' "
                    f"experiment and tagged on the version. Exit 0: promoted; {EXIT_REFUSED}: refused.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the candidate: an MLflow run with a logged model")
    parser.add_argument("--name", required=True, help="registered model name, e.g. co2-model")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help=f"the alias to move (default {DEFAULT_ALIAS})")
    parser.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS,
                        help=f"score compared (default {DEFAULT_METRIC}; rmse and mae: lower is better)")
    parser.add_argument("--min-improvement", default="0.0", metavar="X",
                        help="how much better the candidate must score, in the metric's units (default 0.0: "
                             "strictly better)")
    parser.add_argument("--force", action="store_true",
                        help="move the alias even when the candidate does not win (recorded as forced)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="score on every row of this built-in dataset or CSV/Parquet file instead of "
                             "the run's test split")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local import tracking
    from mlops_local.ml.promotion import decide, evaluate

    # MLflow draws a progress bar on stderr for each model download: errors must stay one line.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = tracking.connect(settings).client
    verdict = evaluate(client, args.run_id.strip(), args.name, args.alias, args.metric, args.min_improvement,
                       args.dataset)
    for line in verdict.lines():  # the verdict is on screen before the alias moves
        print(line, flush=True)
    outcome = decide(client, settings, verdict, force=args.force)
    print(outcome.message())
    if outcome.verdict_run_id:
        experiment = client.get_run(outcome.verdict_run_id).info.experiment_id
        print(f"verdict run: {tracking.run_url(settings, experiment, outcome.verdict_run_id)}")
    return EXIT_REFUSED if outcome.result == "refused" else 0
