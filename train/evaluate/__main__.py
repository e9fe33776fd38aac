"""``python -m train.evaluate COMMAND ...``: quality figures as one JSON object on stdout.

Segmentation: ``wbc --bccd DIR``, ``smears --all-idb1 DIR``, ``crops --all-idb2 DIR``,
``fields --all-idb1 DIR --all-idb2 DIR`` (ALL-IDB2 outlines judged in their ALL-IDB1 fields);
``wbc``/``smears`` take ``--misses FILE.csv`` (each missed expert cell and false detection);
``lodo --bccd DIR --deepbionet DIR --all-idb1 DIR --all-idb2 DIR`` (leave-one-dataset-out).
Classifier (add ``--model NAME``; the active model when omitted for ``cells``/``normals``):
``cells --data DIR``, ``normals --data DIR``, ``smears --all-idb1 DIR --model NAME``.
``--held-out`` skips the groups the model was trained or calibrated on (its ``split.csv``);
``--record`` also stores those figures in the model's ``metrics.json`` and card.
Progress goes to stderr, so ``> result.json`` captures only the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leukemia_core.cli_parser import WholeNameParser
from leukemia_core.errors import LeukemiaCoreError
from train.card import HELD_OUT_SUFFIX, record_figures
from train.cli_compare import class_label_arg
from train.data import FORMATS, load_dataset
from train.evaluate import segmentation as seg_eval
from train.evaluate.fields import evaluate_cells_in_fields


def _progress(done: int, total: int, name: str) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:40]:<40}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = WholeNameParser(prog="python -m train.evaluate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wbc = commands.add_parser("wbc", help="WBC detection and masks on a BCCD-layout folder")
    wbc.add_argument(
        "--bccd", type=Path, required=True, help="folder with images/, annotations/, masks/"
    )
    smears = commands.add_parser("smears", help="blast detection on ALL-IDB1-layout fields")
    smears.add_argument("--all-idb1", type=Path, required=True, help="folder with images/ and xyc/")
    for sub in (wbc, smears):
        sub.add_argument("--misses", type=Path,
                         help="also write each missed expert cell and false detection to this CSV")  # fmt: skip
    lodo = commands.add_parser(
        "lodo",
        help="segmentation figures with each dataset left out of the stain reference and clump rule",
    )
    for name in _LODO_NAMES:
        lodo.add_argument(f"--{name.replace('_', '-')}", type=Path,
                          help=f"{name} folder (BCCD / ALL-IDB layout)")  # fmt: skip
    lodo.add_argument("--workers", type=int, default=2, help="processes (each runs one dataset)")
    crops = commands.add_parser("crops", help="centre-cell masks on ALL-IDB2-layout crops")
    crops.add_argument(
        "--all-idb2", type=Path, required=True, help="folder with images/ and masks/"
    )
    fields = commands.add_parser(
        "fields", help="ALL-IDB2 cell outlines judged in the ALL-IDB1 fields they come from"
    )
    fields.add_argument("--all-idb1", type=Path, required=True, help="folder with images/")
    fields.add_argument(
        "--all-idb2", type=Path, required=True, help="folder with masks/ and source_fields.csv"
    )
    cells = commands.add_parser("cells", help="classifier figures on labelled single cells")
    normals = commands.add_parser("normals", help="false-blast rate on folders of normal cells")
    for sub in (cells, normals):
        sub.add_argument("--data", type=Path, required=True, help="dataset folder or CSV manifest")
        sub.add_argument(
            "--format", choices=FORMATS,
            help="layout, detected when omitted: folders (<class>/<patient>/image, class names "
                 "such as blast, lymphocyte, neutrophil, monocyte), a CSV manifest "
                 "(path,label,group[,source]), or a dataset's own (allidb2, cnmc)",
        )  # fmt: skip
        sub.add_argument("--class-label", type=class_label_arg, action="append", default=[],
                         metavar="FOLDER=LABEL",
                         help="label of a class folder whose name says neither: blast, normal "
                              "or none (left out); repeat for each folder")  # fmt: skip
    for sub in (cells, normals, smears):
        sub.add_argument("--model", help="model folder name (default: the active model)")
        sub.add_argument("--models-dir", type=Path, help="parent of model folders")
        sub.add_argument(
            "--held-out", action="store_true",
            help="leave out the groups (patients, fields) the model was trained, validated or "
                 "calibrated on (its split.csv)",
        )  # fmt: skip
        sub.add_argument("--record", action="store_true",
                         help="also store the held-out figures in the model's metrics.json and "
                              "card (needs --held-out)")  # fmt: skip
    return parser


def _record_key(command: str, figures: dict, sources: set[str]) -> tuple[str, dict]:
    """The ``metrics.json`` key and the figures a model card shows for one command."""
    if command == "smears":
        return "smears", figures
    if command == "normals":
        left_out = ("per_class", "n_skipped_seen_in_training", "false_blasts")
        flat = {k: v for k, v in figures.items() if k not in left_out}
        for cell_type, values in figures.get("per_class", {}).items():
            flat[f"false_blast_rate_{cell_type}"] = values["false_blast_rate"]
        return "normals", flat
    name = next(iter(sources)) if len(sources) == 1 else "cells"
    return f"{name}{HELD_OUT_SUFFIX}", figures  # with its notes: the card shows them too


def _classifier_run(args) -> dict:
    from leukemia_core.classify import Classifier  # imports TensorFlow
    from leukemia_core.models.folder import load_model
    from train.evaluate import classifier as clf_eval

    if args.record and not args.held_out:
        raise ValueError("--record stores held-out figures only: add --held-out, so that no "
                         "cell the model was trained or calibrated on is counted.")  # fmt: skip
    # The runtime the app uses, so the figures are those of what it runs.
    classifier = Classifier(load_model(args.model, args.models_dir), runtime="auto")
    seen = clf_eval.seen_groups(classifier.model.path) if args.held_out else None
    if args.held_out and not (classifier.model.path / clf_eval.SPLIT_FILE).is_file():
        raise ValueError(f"--held-out needs the model's {clf_eval.SPLIT_FILE} (the groups it was "
                         f"trained and calibrated on); {classifier.model.name} has none, so no "
                         "cell can be told held-out. Leave out --held-out for data the model "
                         "cannot have seen.")  # fmt: skip
    common = {"model": classifier.model.name, "runtime": classifier.runtime,
              "held_out": bool(args.held_out)}  # fmt: skip
    if args.command == "smears":
        figures = clf_eval.evaluate_smears(args.all_idb1, classifier, seen=seen, progress=_progress)
        data, sources = args.all_idb1, {"allidb1"}
    else:
        # One class is allowed: a folder of blasts alone measures sensitivity (a note says what
        # cannot be measured), and normals are the point of the "normals" command.
        table = load_dataset(args.data, args.format, require_both_classes=False,
                             label_map=dict(args.class_label) or None)  # fmt: skip
        if args.held_out and not table.groups_known:
            raise ValueError("--held-out needs each cell's patient or field, to leave out those "
                             "the model was trained on, and these data do not say: "
                             + " ".join(table.notes))  # fmt: skip
        run = clf_eval.evaluate_cells if args.command == "cells" else clf_eval.evaluate_normals
        figures = run(table, classifier, seen=seen, progress=_progress)
        data, sources = args.data, {r.source for r in table.records}
    if args.record:
        key, values = _record_key(args.command, figures, sources)
        record_figures(classifier.model.path, {key: values})
        print(f"recorded as {key!r} in {classifier.model.path / 'metrics.json'}", file=sys.stderr)
    return {"command": args.command, "data": str(data), **common, **figures}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        args.command in ("cells", "normals")
        or getattr(args, "model", None)
        or getattr(args, "held_out", False)
    ):
        try:
            result = _classifier_run(args)
        except (LeukemiaCoreError, ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2))
        return 0
    try:
        result = _segmentation_run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _segmentation_run(args) -> dict:
    """Figures of a segmentation command; FileNotFoundError/ValueError say what is missing."""
    names = _SEGMENTATION_FOLDERS.get(args.command)
    if args.command == "lodo":
        names = [name for name in _LODO_NAMES if getattr(args, name)]
    folders = [getattr(args, name) for name in names]
    for folder in folders:
        if not (folder / "images").is_dir():
            raise FileNotFoundError(
                f"{folder} has no images/ folder; see --help for the expected layout."
            )
    if args.command == "lodo":
        from train.evaluate.lodo import leave_one_dataset_out

        datasets = dict(zip(names, folders, strict=True))
        return {"command": "lodo", **leave_one_dataset_out(datasets, _progress, args.workers)}
    if args.command == "fields":
        result = evaluate_cells_in_fields(*folders, progress=_progress)
        if not result["n_cells"]:
            raise ValueError(
                f"no ALL-IDB2 crop of {args.all_idb2} (source_fields.csv, masks/) points to a "
                f"field in {args.all_idb1}/images."
            )
        return {"command": "fields", **result}
    run = {"wbc": seg_eval.evaluate_wbc, "smears": seg_eval.evaluate_smears,
           "crops": seg_eval.evaluate_crops}[args.command]  # fmt: skip
    outcomes = [] if getattr(args, "misses", None) else None
    result = run(
        folders[0], progress=_progress, **({} if outcomes is None else {"outcomes": outcomes})
    )
    if outcomes is not None:
        from train.evaluate.detections import write_outcomes

        write_outcomes(args.misses, outcomes)
        print(f"{len(outcomes)} misses and false detections written to {args.misses}",
              file=sys.stderr)  # fmt: skip
    return {"command": args.command, "data": str(folders[0]), **result}


# The dataset folders (argument names) each segmentation command reads.
_SEGMENTATION_FOLDERS = {
    "wbc": ("bccd",), "smears": ("all_idb1",), "crops": ("all_idb2",),
    "fields": ("all_idb1", "all_idb2"),
}  # fmt: skip
_LODO_NAMES = ("bccd", "deepbionet", "all_idb1", "all_idb2")  # the kinds train.evaluate.lodo knows

if __name__ == "__main__":
    raise SystemExit(main())
