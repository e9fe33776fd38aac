"""``python -m train fit|calibrate|domain``: make or re-fit one model folder from its data.

Each command has its arguments (``add_*_arguments``) and its handler (``*_command``), which
:mod:`train.__main__` wires into the parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leukemia_core.accounts import Accounts, User
from leukemia_core.calibration import THRESHOLD_RULES
from leukemia_core.models import list_architectures
from leukemia_core.models.config import TEST_TIME_VIEWS
from leukemia_core.models.folder import active_model_name, models_dir
from leukemia_core.models.inputs import STAIN_NORMALISATIONS
from train.augmentation import ALL_AUGMENTATIONS, AUGMENTATIONS
from train.batches import BALANCING
from train.data import FORMATS
from train.fit import FitConfig
from train.progress import ProgressBars
from train.records import CellTable


def weights_arg(value: str) -> str | None:
    """``--weights``: ``none``/``random`` for random initialisation, else as given."""
    return None if value.lower() in ("none", "random") else value


def add_split_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``/``--format`` of the commands that re-read a model's own split (its crop bank)."""
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="the data the model was split on (e.g. its crop bank); repeatable")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fit``: data, model folder, architecture and training settings."""
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="dataset folder or CSV manifest; repeat to train on several")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")
    parser.add_argument("--allow-ungrouped", action="store_true",
                        help="accept cells without subject/field ids (scores may be inflated)")  # fmt: skip
    parser.add_argument("--name", required=True, help="model folder name")
    parser.add_argument("--models-dir", type=Path, help="parent folder (default: models/)")
    parser.add_argument("--replace-active", action="store_true",
                        help="allow --name to be the active model: every new analysis then uses "
                        "the new weights (the old ones are kept as <name>.previous; recorded)")  # fmt: skip
    parser.add_argument("--architecture", default="efficientnet_b3", choices=list_architectures())
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--weights", type=weights_arg, default="imagenet",
                        help="'imagenet' (default), 'none' for random initialisation, or a "
                             ".weights.h5 path")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--fine-tune-epochs", type=int, default=0)
    parser.add_argument("--fine-tune-layers", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--balance", choices=BALANCING, default="oversample")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--stain-normalisation", choices=list(STAIN_NORMALISATIONS), default="none")
    parser.add_argument(
        "--threshold-rule", choices=list(THRESHOLD_RULES), default="sensitivity_first"
    )
    parser.add_argument(
        "--augmentations",
        nargs="+",
        choices=ALL_AUGMENTATIONS,
        default=AUGMENTATIONS,
        help=f"which augmentations (default: {' '.join(AUGMENTATIONS)})",
    )
    parser.add_argument("--cached-features", action="store_true",
                        help="train the head on cached frozen-backbone features (fast on CPU)")  # fmt: skip
    parser.add_argument("--feature-views", type=int, default=8)
    parser.add_argument("--test-time-views", type=int, choices=TEST_TIME_VIEWS, default=1,
                        help="average the logits over 4 quarter turns or 8 turns and mirror images "
                             "of each cell when classifying (calibrated that way; default 1: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2),
                        metavar=("TRAIN", "VAL", "TEST"), help="shares of groups per source")  # fmt: skip
    parser.add_argument("--split-from", type=Path, metavar="SPLIT_CSV",
                        help="re-use another model's split.csv (same validation and test groups) instead "
                             "of --fractions/--seed, to compare two models on the same cells")  # fmt: skip
    parser.add_argument("--checkpoints", type=Path, help="checkpoint folder (re-run to resume)")
    parser.add_argument("--describe", default="", help="words about the data for the model card")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``calibrate``: the model folder and the data it was split on."""
    parser.add_argument("name", help="model folder")
    add_split_data_arguments(parser)
    parser.add_argument(
        "--test-time-views",
        type=int,
        choices=TEST_TIME_VIEWS,
        help="views averaged when classifying (default: the model's)",
    )
    parser.add_argument("--describe", default="", help="words about the data for the config")
    parser.add_argument("--models-dir", type=Path)


def add_domain_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``domain``: the model folder, its data and the reference's settings."""
    parser.add_argument("name", help="model folder (needs its split.csv)")
    add_split_data_arguments(parser)
    parser.add_argument(
        "--max-train-cells",
        type=int,
        default=4000,
        help="fit on a seeded random subset of the training cells (0: all)",
    )
    parser.add_argument(
        "--components", type=int, default=64, help="principal components of the features"
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="of the validation groups' median scores, sets the limit",
    )
    parser.add_argument("--describe", default="", help="words about the data for the config")
    parser.add_argument("--models-dir", type=Path)


def fit_command(args: argparse.Namespace) -> int:
    """``fit``: split, train, calibrate and write the model folder; prints its test figures."""
    from train.run import train_model  # imports TensorFlow

    active = active_model_name(args.models_dir)
    replacing = (
        args.name == active and (args.models_dir or models_dir()).joinpath(args.name).exists()
    )
    if replacing and not args.replace_active:  # checked before minutes of training
        raise ValueError(
            f"{args.name} is the active model: training into it changes what every new analysis "
            "uses, without a promotion. Give --name a new folder (and promote or activate it "
            "after comparing), or add --replace-active."
        )
    table = load_tables(args.data, args.format, allow_ungrouped=args.allow_ungrouped)
    config = FitConfig(
        architecture=args.architecture, input_size=args.input_size, weights=args.weights,
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_layers=args.fine_tune_layers, batch_size=args.batch_size,
        learning_rate=args.lr, patience=args.patience, balance=args.balance,
        augment=not args.no_augment, augmentations=tuple(args.augmentations),
        cached_features=args.cached_features,
        feature_views=args.feature_views, test_time_views=args.test_time_views, seed=args.seed,
        stain_normalisation=args.stain_normalisation, threshold_rule=args.threshold_rule,
    )  # fmt: skip
    if args.weights is None:
        print(f"note: {args.architecture} starts from random weights (--weights none).",
              file=sys.stderr)  # fmt: skip
    result = train_model(table.records, config, args.name, root=args.models_dir,
                         fractions=tuple(args.fractions), data_description=args.describe,
                         checkpoint_dir=args.checkpoints, progress=ProgressBars(),
                         split_file=args.split_from)  # fmt: skip
    if replacing:  # a change of the model in use, in the model-change record like the others
        Accounts().record_model_change(User.shell(), "fit", args.name, args.name,
                                       note="retrained in place; the old version is kept as a "
                                       ".previous folder")  # fmt: skip
    test = result.metrics["test"]
    print(json.dumps({"folder": str(result.folder), "test": {k: test[k] for k in (
        "n", "accuracy", "balanced_accuracy", "weighted_f1", "auroc", "ece")}}, indent=2))  # fmt: skip
    return 0


def load_tables(
    locations: list[Path], layout: str | None, *, allow_ungrouped: bool = True
) -> CellTable:
    """The datasets as one table, with the dataset check's rules (``inspect``, ``compare``):
    both classes in the union, each picture once by its bytes, cells without a subject or field
    id refused unless ``allow_ungrouped``; notes to stderr."""
    from train.inspection import DatasetSource, inspect_datasets

    table, summary = inspect_datasets([DatasetSource(d, layout) for d in locations],
                                      verify=False, allow_ungrouped=allow_ungrouped)  # fmt: skip
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    return table


def calibrate_command(args: argparse.Namespace) -> int:
    """``calibrate``: re-fit the calibration on the model's own validation groups."""
    from train.run import recalibrate  # imports TensorFlow

    table = load_tables(args.data, args.format)
    result = recalibrate(args.name, table.records, test_time_views=args.test_time_views,
                         root=args.models_dir, data_description=args.describe,
                         progress=ProgressBars())  # fmt: skip
    done = result.config["training"]["recalibrated"]
    for side, words in (("val", "validation"), ("test", "test")):
        found = done["coverage"][side]
        if found["groups"] < found["groups_in_split"]:
            print(f"note: {found['groups']} of the {found['groups_in_split']} {words} groups of "
                  f"split.csv are in this data ({found['cells']} cells); the others are left out.",
                  file=sys.stderr)  # fmt: skip
    if done["dropped_metrics"]:
        print(f"note: held-out figures measured with the old calibration were removed from "
              f"metrics.json ({', '.join(done['dropped_metrics'])}); measure and store them "
              "again with python -m train.evaluate smears|cells|normals ... --held-out --record.",
              file=sys.stderr)  # fmt: skip
    figures = {side: {k: result.metrics[side][k] for k in (
        "n", "balanced_accuracy", "auroc", "ece")} for side in ("validation", "test")}  # fmt: skip
    print(json.dumps({"folder": str(result.folder), "calibration": result.config["calibration"],
                      "test_time_views": result.config["test_time_views"], **figures}, indent=2))  # fmt: skip
    return 0


def domain_command(args: argparse.Namespace) -> int:
    """``domain``: fit and write the model's out-of-domain reference."""
    from train.domain import fit_domain  # imports TensorFlow

    table = load_tables(args.data, args.format)
    done = fit_domain(args.name, table.records, root=args.models_dir,
                      max_train_cells=args.max_train_cells or None,
                      n_components=args.components, percentile=args.percentile,
                      data_description=args.describe, progress=ProgressBars())  # fmt: skip
    print(json.dumps({"file": str(done.path), "limit": round(done.reference.limit, 4),
                      "limit_source": done.reference.limit_source, "train_cells": done.n_train,
                      "val_cells": done.n_val, "val_groups": done.n_val_groups,
                      "val_groups_warned": done.val_warned_groups}, indent=2))  # fmt: skip
    return 0
