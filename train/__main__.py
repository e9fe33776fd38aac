"""``python -m train COMMAND``: build a crop bank, train a model folder, re-render its card.

Commands:
    bank     turn public datasets into classifier-domain crops plus manifest.csv
    fit      train one architecture on one or more datasets; writes models/<name>/
    card     re-render models/<name>/card.md from its config.json and metrics.json
    inspect  check datasets for training: layout, cells per class and group, problems
    compare  train several architectures on the same grouped splits and compare them
    promote  make a compared model the active one (models/<name>/ + models/ACTIVE)
    adapt    re-fit a model on a lab's signed cells as a new version <name>-site<k>
    activate make a model folder the active one (models/ACTIVE)
    domain   fit a model folder's out-of-domain reference (domain.npz) on its own split
    worker   run the queued comparison jobs of the Retrain page (started by the app)

Progress goes to stderr. Research use only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from leukemia_core.calibration import THRESHOLD_RULES
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models import list_architectures
from leukemia_core.models.folder import TEST_TIME_VIEWS, models_dir, set_active_model
from leukemia_core.models.inputs import STAIN_NORMALISATIONS
from train.adapt_model import adapt_command, add_adapt_arguments
from train.augmentation import ALL_AUGMENTATIONS, AUGMENTATIONS
from train.batches import BALANCING
from train.card import model_card
from train.cellbank import SKIPPED_FILE, SOURCES, build_bank
from train.compare_settings import MISSING_WEIGHTS, PRESETS, PROTOCOLS
from train.data import FORMATS, DatasetError, load_dataset
from train.fit import FitConfig
from train.records import CellTable


class _Bars:
    """Progress events to stderr: tqdm bars on a terminal, plain lines in a log file."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}
        self.tty = sys.stderr.isatty()
        self.last_stage = ""

    def __call__(self, event: dict) -> None:
        stage, done, total = event["stage"], event.get("done", 0), event.get("total", 0)
        shown = {k: round(v, 4) for k, v in event.items() if k in ("loss", "accuracy",
                                                                    "val_loss", "val_accuracy")}  # fmt: skip
        where = " ".join(f"{k} {event[k]}" for k in ("model", "fold") if event.get(k))
        if stage.endswith("_epoch") or stage in ("model", "model_done"):
            line = f"{where} {stage} {done}/{total}: {shown or event.get('status', '')}".strip()
            (tqdm.write if self.tty else print)(line, file=sys.stderr)
        if not self.tty:  # a log: one line when a stage starts, none per batch
            if stage != self.last_stage and not stage.endswith("_epoch"):
                print(f"{where} {stage} ({total})".strip(), file=sys.stderr)
            self.last_stage = stage
            return
        bar = self.bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = self.bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if shown:
            bar.set_postfix(shown)


def _input_size(value: str) -> int:
    """A side in pixels; ``default`` (0) leaves each architecture at its own size."""
    return 0 if value == "default" else int(value)


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "random") else value


def _split_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data``/``--format`` of the commands that re-read a model's own split (its crop bank)."""
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="the data the model was split on (e.g. its crop bank); repeatable")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    bank = commands.add_parser("bank", help="classifier-domain crops of public datasets")
    for kind in SOURCES:
        bank.add_argument(f"--{kind}", type=Path, help=f"{kind} folder")
    bank.add_argument("--out", type=Path, required=True, help="output folder")
    bank.add_argument("--size", type=int, default=300, help="crop side in pixels")

    fit = commands.add_parser("fit", help="train a model folder")
    fit.add_argument("--data", type=Path, action="append", required=True,
                     help="dataset folder or CSV manifest; repeat to train on several")  # fmt: skip
    fit.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")
    fit.add_argument("--name", required=True, help="model folder name")
    fit.add_argument("--models-dir", type=Path, help="parent folder (default: models/)")
    fit.add_argument("--architecture", default="efficientnet_b3", choices=list_architectures())
    fit.add_argument("--input-size", type=int)
    fit.add_argument("--weights", type=_weights, default="imagenet",
                     help="'imagenet' (default), 'none' for random initialisation, or a "
                          ".weights.h5 path")  # fmt: skip
    fit.add_argument("--epochs", type=int, default=15)
    fit.add_argument("--fine-tune-epochs", type=int, default=0)
    fit.add_argument("--fine-tune-layers", type=int, default=30)
    fit.add_argument("--batch-size", type=int, default=40)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--patience", type=int, default=5)
    fit.add_argument("--balance", choices=BALANCING, default="oversample")
    fit.add_argument("--no-augment", action="store_true")
    fit.add_argument("--stain-normalisation", choices=list(STAIN_NORMALISATIONS), default="none")
    fit.add_argument("--threshold-rule", choices=list(THRESHOLD_RULES), default="sensitivity_first")
    fit.add_argument(
        "--augmentations",
        nargs="+",
        choices=ALL_AUGMENTATIONS,
        default=AUGMENTATIONS,
        help="which augmentations (default: all)",
    )
    fit.add_argument("--cached-features", action="store_true",
                     help="train the head on cached frozen-backbone features (fast on CPU)")  # fmt: skip
    fit.add_argument("--feature-views", type=int, default=8)
    fit.add_argument("--test-time-views", type=int, choices=TEST_TIME_VIEWS, default=1,
                     help="average the logits over 4 quarter turns or 8 turns and mirror images "
                          "of each cell when classifying (calibrated that way; default 1: none)")  # fmt: skip
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2),
                     metavar=("TRAIN", "VAL", "TEST"), help="shares of groups per source")  # fmt: skip
    fit.add_argument("--split-from", type=Path, metavar="SPLIT_CSV",
                     help="re-use another model's split.csv (same validation and test groups) instead "
                          "of --fractions/--seed, to compare two models on the same cells")  # fmt: skip
    fit.add_argument("--checkpoints", type=Path, help="checkpoint folder (re-run to resume)")
    fit.add_argument("--describe", default="", help="words about the data for the model card")

    calibrate = commands.add_parser(
        "calibrate", help="re-fit a model's calibration on its own validation groups"
    )
    calibrate.add_argument("name", help="model folder")
    _split_data_args(calibrate)
    calibrate.add_argument(
        "--test-time-views",
        type=int,
        choices=TEST_TIME_VIEWS,
        help="views averaged when classifying (default: the model's)",
    )
    calibrate.add_argument("--describe", default="", help="words about the data for the config")
    calibrate.add_argument("--models-dir", type=Path)

    card = commands.add_parser("card", help="re-render a model card")
    card.add_argument("name")
    card.add_argument("--models-dir", type=Path)

    inspect = commands.add_parser("inspect", help="check datasets before training")
    _data_args(inspect)

    compare = commands.add_parser("compare", help="compare architectures on grouped splits")
    _data_args(compare)
    compare.add_argument(
        "--preset",
        choices=PRESETS,
        help="architectures and settings to start "
        "from: " + "; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()),
    )
    compare.add_argument(
        "--architectures",
        nargs="+",
        choices=list_architectures(),
        metavar="NAME",
        help="registry names (default: the preset's)",
    )
    compare.add_argument(
        "--input-size",
        type=_input_size,
        help="pixels, or 'default' for each architecture's own size",
    )
    for flag, kind in (
        ("--epochs", int),
        ("--batch-size", int),
        ("--fine-tune-epochs", int),
        ("--fine-tune-layers", int),
        ("--feature-views", int),
        ("--patience", int),
        ("--folds", int),
        ("--seed", int),
    ):
        compare.add_argument(flag, type=kind)
    compare.add_argument(
        "--test-time-views",
        type=int,
        choices=TEST_TIME_VIEWS,
        help="views whose logits are averaged when classifying (default 1)",
    )
    compare.add_argument("--balance", choices=BALANCING)
    compare.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    compare.add_argument(
        "--augmentations",
        nargs="+",
        choices=ALL_AUGMENTATIONS,
        help="which augmentations (default: the preset's, else the basic five)",
    )
    compare.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        type=lambda v: v.replace("-", "_"),
        help="grouped (default): every source on every side; "
        "leave-one-source-out: each source tested by models that never "
        "saw it (choose recipes by this)",
    )
    compare.add_argument("--stain-normalisation", choices=list(STAIN_NORMALISATIONS))
    compare.add_argument("--threshold-rule", choices=list(THRESHOLD_RULES))
    compare.add_argument(
        "--cached-features",
        dest="cached_features",
        action="store_true",
        default=None,
        help="frozen backbones, heads on cached features",
    )
    compare.add_argument("--no-cached-features", dest="cached_features", action="store_false")
    compare.add_argument(
        "--missing-weights",
        choices=MISSING_WEIGHTS,
        help="architectures without ImageNet weights offline: skip (default) "
        "or start from random weights",
    )
    compare.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    compare.add_argument(
        "--promote",
        metavar="ARCHITECTURE",
        help="afterwards, make this model the active one (needs --name)",
    )
    compare.add_argument("--name", help="model folder name for --promote")
    compare.add_argument("--models-dir", type=Path)

    promote = commands.add_parser("promote", help="make a compared model the active one")
    promote.add_argument("run", type=Path, help="run folder of a finished comparison")
    promote.add_argument("architecture")
    promote.add_argument("--name", required=True, help="model folder name")
    promote.add_argument("--models-dir", type=Path)

    adapt = commands.add_parser("adapt", help="adapt a model to a lab's signed cells (new version)")
    add_adapt_arguments(adapt)

    activate = commands.add_parser("activate", help="make a model folder the active one")
    activate.add_argument("name", help="model folder")
    activate.add_argument("--models-dir", type=Path)

    domain = commands.add_parser("domain", help="fit a model's out-of-domain reference")
    domain.add_argument("name", help="model folder (needs its split.csv)")
    _split_data_args(domain)
    domain.add_argument(
        "--max-train-cells",
        type=int,
        default=4000,
        help="fit on a seeded random subset of the training cells (0: all)",
    )
    domain.add_argument(
        "--components", type=int, default=64, help="principal components of the features"
    )
    domain.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="of the validation groups' median scores, sets the limit",
    )
    domain.add_argument("--describe", default="", help="words about the data for the config")
    domain.add_argument("--models-dir", type=Path)

    worker = commands.add_parser("worker", help="run queued comparison jobs, then exit")
    worker.add_argument("--runs", type=Path, help="jobs folder (default: runs/)")
    return parser


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="dataset folder or CSV manifest; repeat to combine")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")
    parser.add_argument(
        "--allow-ungrouped",
        action="store_true",
        help="accept cells without subject/field ids (scores may be inflated)",
    )
    parser.add_argument(
        "--reviewed-cases",
        nargs="?",
        const="",
        metavar="DATABASE",
        help="add the signed cells of the case record (default database)",
    )


def _data_locations(args) -> list[str]:
    """The ``--data`` locations, plus the reviewed cases exported next to the run."""
    locations = [str(d) for d in args.data]
    if args.reviewed_cases is not None:
        from leukemia_core.store import CaseStore
        from train.reviewed_cases import export_reviewed_cases

        store = CaseStore(args.reviewed_cases or None)
        out = (getattr(args, "out", None) or Path(tempfile.mkdtemp())) / "reviewed_cases"
        export_reviewed_cases(store, out)
        locations.append(str(out / "manifest.csv"))
    if not locations:
        raise DatasetError("Name at least one dataset: --data FOLDER (repeatable) or "
                           "--reviewed-cases.")  # fmt: skip
    return locations


def _inspect(args) -> int:
    from train.inspection import DatasetSource, inspect_datasets

    _, summary = inspect_datasets([DatasetSource(d, args.format) for d in _data_locations(args)],
                                  allow_ungrouped=args.allow_ungrouped)  # fmt: skip
    values = summary.to_dict()
    values["groups"] = values["groups"][:20]  # the largest; the page shows them all
    print(json.dumps(values, indent=2))
    return 0


def settings_from_args(args: argparse.Namespace):
    """The :class:`~train.compare_settings.CompareSettings` that ``compare``'s flags ask for."""
    from dataclasses import fields

    from train.compare_settings import CompareSettings

    overrides = {f.name: getattr(args, f.name) for f in fields(CompareSettings)
                 if getattr(args, f.name, None) is not None}  # fmt: skip
    for key in ("architectures", "augmentations"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    if overrides.get("input_size") == 0:
        overrides["input_size"] = None
    if args.preset:
        return CompareSettings.from_preset(args.preset, **overrides)
    if "architectures" in overrides:
        return CompareSettings(**overrides)
    raise ValueError("Name --architectures or a --preset (" + ", ".join(PRESETS) + ").")


def _compare(args) -> int:
    from train.compare import compare_models, promote
    from train.compare_tables import comparison_markdown, per_source_markdown
    from train.jobs import JobSpec, load_job_data, record_finished_job, runs_dir

    if args.promote and not args.name:
        raise ValueError("--promote needs --name for the model folder.")
    settings = settings_from_args(args)
    out = args.out or runs_dir() / f"cli-{time.strftime('%Y%m%d-%H%M%S')}"
    args.out = out
    spec = JobSpec(tuple(_data_locations(args)), settings, args.format, args.allow_ungrouped)
    records, words = load_job_data(spec)
    print(f"note: {words}; results go to {out}", file=sys.stderr)
    comparison = compare_models(records, settings, run_dir=out, data_description=words,
                                progress=_Bars())  # fmt: skip
    record_finished_job(out, replace(spec, title="command line"), comparison)
    print(comparison_markdown(comparison.table()))
    if settings.protocol == "leave_one_source_out":
        from train.loso import extras_markdown

        done = [o for o in comparison.outcomes if o.status == "done"]
        print("\n" + per_source_markdown({o.name: comparison.per_source(o) for o in done}))
        for outcome in comparison.outcomes:
            if outcome.loso:
                print(f"\n{outcome.name}: out-of-domain score and site adaptation\n")
                print(extras_markdown(outcome.loso))
    if args.promote:
        folder = promote(out, args.promote, args.name, root=args.models_dir)
        print(f"promoted {args.promote} as {folder} (now the active model)")
    return 0


def _fit(args) -> int:
    from train.run import train_model  # imports TensorFlow

    table = _load_tables(args.data, args.format)
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
                         checkpoint_dir=args.checkpoints, progress=_Bars(),
                         split_file=args.split_from)  # fmt: skip
    test = result.metrics["test"]
    print(json.dumps({"folder": str(result.folder), "test": {k: test[k] for k in (
        "n", "accuracy", "balanced_accuracy", "weighted_f1", "auroc", "ece")}}, indent=2))  # fmt: skip
    return 0


def _load_tables(locations: list[Path], layout: str | None) -> CellTable:
    table = CellTable.concat(*(load_dataset(d, layout) if len(locations) == 1
                               else load_dataset(d, layout, require_both_classes=False)
                               for d in locations))  # fmt: skip
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    return table


def _calibrate(args) -> int:
    from train.run import recalibrate  # imports TensorFlow

    table = _load_tables(args.data, args.format)
    result = recalibrate(args.name, table.records, test_time_views=args.test_time_views,
                         root=args.models_dir, data_description=args.describe,
                         progress=_Bars())  # fmt: skip
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


def _domain(args) -> int:
    from train.domain import fit_domain  # imports TensorFlow

    table = _load_tables(args.data, args.format)
    done = fit_domain(args.name, table.records, root=args.models_dir,
                      max_train_cells=args.max_train_cells or None,
                      n_components=args.components, percentile=args.percentile,
                      data_description=args.describe, progress=_Bars())  # fmt: skip
    print(json.dumps({"file": str(done.path), "limit": round(done.reference.limit, 4),
                      "limit_source": done.reference.limit_source, "train_cells": done.n_train,
                      "val_cells": done.n_val, "val_groups": done.n_val_groups,
                      "val_groups_warned": done.val_warned_groups}, indent=2))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bank":
            sources = {k: getattr(args, k) for k in SOURCES if getattr(args, k)}
            if not sources:
                print(
                    f"error: name at least one source (--{' --'.join(SOURCES)}).", file=sys.stderr
                )
                return 2

            def bar(kind):
                progress = tqdm(desc=kind, file=sys.stderr)
                return lambda done, total, name: (setattr(progress, "total", total),
                                                  progress.update(done - progress.n))  # fmt: skip

            manifest = build_bank(sources, args.out, size=args.size, progress=bar)
            skipped = (manifest.parent / SKIPPED_FILE).read_text().splitlines()[1:]
            if skipped:
                print(
                    f"left out {len(skipped)} unreadable image(s); see "
                    f"{manifest.parent / SKIPPED_FILE}",
                    file=sys.stderr,
                )
            print(manifest)
        elif args.command == "fit":
            return _fit(args)
        elif args.command == "calibrate":
            return _calibrate(args)
        elif args.command == "inspect":
            return _inspect(args)
        elif args.command == "compare":
            return _compare(args)
        elif args.command == "promote":
            from train.compare import promote

            folder = promote(args.run, args.architecture, args.name, root=args.models_dir)
            print(f"promoted {args.architecture} as {folder} (now the active model)")
        elif args.command == "adapt":
            return adapt_command(args)
        elif args.command == "activate":
            set_active_model(args.name, args.models_dir)
            print(f"{args.name} is now the active model")
        elif args.command == "domain":
            return _domain(args)
        elif args.command == "worker":
            from train.jobs import run_worker

            print(f"worker ran {run_worker(args.runs)} job(s)", file=sys.stderr)
        else:
            folder = (args.models_dir or models_dir()) / args.name
            config = json.loads((folder / "config.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "card.md").write_text(model_card(args.name, config, metrics))
    except (LeukemiaCoreError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
