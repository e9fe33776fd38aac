"""``python -m train inspect|compare``: check picked datasets, compare architectures on them.

Each command has its arguments (``add_*_arguments``) and its handler (``*_command``), which
:mod:`train.__main__` wires into the parser; ``promote`` and ``worker`` are one call each there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from leukemia_core.calibration import THRESHOLD_RULES
from leukemia_core.models import list_architectures
from leukemia_core.models.config import TEST_TIME_VIEWS
from leukemia_core.models.inputs import STAIN_NORMALISATIONS
from leukemia_core.roles import User
from train.augmentation import ALL_AUGMENTATIONS
from train.batches import BALANCING
from train.compare_settings import MISSING_WEIGHTS, PRESETS, PROTOCOLS
from train.data import FORMATS, DatasetError
from train.progress import ProgressBars
from train.records import parse_class_label


def input_size_arg(value: str) -> int:
    """A side in pixels; ``default`` (0) leaves each architecture at its own size."""
    return 0 if value == "default" else int(value)


def class_label_arg(value: str) -> tuple[str, str | None]:
    """``--class-label`` values: see :func:`train.records.parse_class_label`."""
    try:
        return parse_class_label(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--format``, ``--allow-ungrouped``, ``--skip-unreadable``,
    ``--class-label`` and ``--reviewed-cases`` (inspect, compare)."""
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="dataset folder or CSV manifest; repeat to combine")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout (detected when omitted)")
    parser.add_argument(
        "--allow-ungrouped",
        action="store_true",
        help="accept cells without subject/field ids (scores may be inflated)",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that cannot be decoded (listed) instead of stopping",
    )
    parser.add_argument(
        "--class-label",
        type=class_label_arg,
        action="append",
        default=[],
        metavar="FOLDER=LABEL",
        help="label of a class folder whose name says neither: blast, normal or none (left "
        "out); repeat for each folder",
    )
    parser.add_argument(
        "--reviewed-cases",
        nargs="?",
        const="",
        metavar="DATABASE",
        help="add the signed cells of the case record (default database)",
    )


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compare``: data, preset or architectures, settings, run folder."""
    add_data_arguments(parser)
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        help="architectures and settings to start "
        "from: " + "; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()),
    )
    parser.add_argument(
        "--architectures",
        nargs="+",
        choices=list_architectures(),
        metavar="NAME",
        help="registry names (default: the preset's)",
    )
    parser.add_argument(
        "--input-size",
        type=input_size_arg,
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
        parser.add_argument(flag, type=kind)
    parser.add_argument(
        "--test-time-views",
        type=int,
        choices=TEST_TIME_VIEWS,
        help="views whose logits are averaged when classifying (default 1)",
    )
    parser.add_argument("--balance", choices=BALANCING)
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    parser.add_argument(
        "--augmentations",
        nargs="+",
        choices=ALL_AUGMENTATIONS,
        help="which augmentations (default: the preset's, else the basic five)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        type=lambda v: v.replace("-", "_"),
        help="grouped (default): every source on every side; "
        "leave-one-source-out: each source tested by models that never "
        "saw it (choose recipes by this)",
    )
    parser.add_argument("--stain-normalisation", choices=list(STAIN_NORMALISATIONS))
    parser.add_argument("--threshold-rule", choices=list(THRESHOLD_RULES))
    parser.add_argument(
        "--cached-features",
        dest="cached_features",
        action="store_true",
        default=None,
        help="frozen backbones, heads on cached features",
    )
    parser.add_argument("--no-cached-features", dest="cached_features", action="store_false")
    parser.add_argument(
        "--missing-weights",
        choices=MISSING_WEIGHTS,
        help="architectures without ImageNet weights offline: skip (default) "
        "or start from random weights",
    )
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    parser.add_argument(
        "--promote",
        metavar="ARCHITECTURE",
        help="afterwards, make this model the active one (needs --name)",
    )
    parser.add_argument("--name", help="model folder name for --promote")
    parser.add_argument("--despite", default="", metavar="REASON",
                        help="with --promote: promote it even where the checks refuse, for this "
                             "reason in words (kept in its card and the model changes)")  # fmt: skip
    parser.add_argument("--models-dir", type=Path)


def data_locations(args) -> list[str]:
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


def inspect_command(args: argparse.Namespace) -> int:
    """``inspect``: load and check the datasets, print their summary as JSON."""
    from train.inspection import DatasetSource, inspect_datasets

    _, summary = inspect_datasets([DatasetSource(d, args.format) for d in data_locations(args)],
                                  allow_ungrouped=args.allow_ungrouped,
                                  skip_unreadable=args.skip_unreadable,
                                  class_labels=dict(args.class_label))  # fmt: skip
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


def compare_command(args: argparse.Namespace) -> int:
    """``compare``: run the comparison, print its table, promote a model if asked."""
    from train.compare import compare_models
    from train.compare_tables import comparison_markdown, per_source_markdown
    from train.crop_cache import CACHE_FOLDER, CropCache
    from train.job_worker import load_job_data
    from train.jobs import JOB_FILE, JobSpec, record_finished_job, runs_dir
    from train.promote import promote

    if args.promote and not args.name:
        raise ValueError("--promote needs --name for the model folder.")
    settings = settings_from_args(args)
    out = args.out or runs_dir() / f"cli-{time.strftime('%Y%m%d-%H%M%S')}"
    if (Path(out) / JOB_FILE).is_file():  # clearing it would leave the page a "done" job
        raise ValueError(  # without results while this one runs, or if stopped
            f"{out} holds a comparison already (the Retrain page lists it, and models may have "
            "been promoted from it); give --out a new folder."
        )
    args.out = out
    spec = JobSpec(tuple(data_locations(args)), settings, args.format, args.allow_ungrouped,
                   skip_unreadable=args.skip_unreadable,
                   class_labels=dict(args.class_label))  # fmt: skip
    records, words, notes = load_job_data(spec)
    print(f"note: {words}; results go to {out}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    comparison = compare_models(records, settings, run_dir=out, data_description=words,
                                progress=ProgressBars(),
                                crop_cache=CropCache(out.parent / CACHE_FOLDER))  # fmt: skip
    record_finished_job(out, replace(spec, title="command line"), comparison, notes)
    print(comparison_markdown(comparison.table()))
    if settings.protocol == "leave_one_source_out":
        from train.loso import extras_markdown

        done = [o for o in comparison.outcomes if o.status == "done"]
        print("\n" + per_source_markdown({o.name: comparison.per_source(o) for o in done}))
        for outcome in comparison.outcomes:
            if outcome.loso:
                print(f"\n{outcome.name}: out-of-domain score and site adaptation\n")
                print(extras_markdown(outcome.loso))
    if reason := comparison.untrained_reason():
        print(f"error: {reason}", file=sys.stderr)
        return 1
    if args.promote:
        folder = promote(out, args.promote, args.name, root=args.models_dir, user=User.shell(),
                         despite=args.despite)  # fmt: skip
        print(f"promoted {args.promote} as {folder} (now the active model)")
    return 0
