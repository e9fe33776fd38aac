"""Adapt a model folder to a lab's signed cells, as a new model version that must be made active.

:func:`adapt_model` classifies the cells through the app's own :class:`Classifier` (same crops,
preprocessing and test-time views), takes the pooled features the ``logits`` layer reads, runs
:func:`train.adapt.adapt_from_arrays` and writes ``<base>-site<k>``: a new folder, never over an
existing one, with ``models/ACTIVE`` left as it was. This is what ``python -m train adapt`` and
the Retrain page's "Adapt to this lab" call.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from leukemia_core.accounts import Accounts, Permission, User, require
from leukemia_core.classify import Classifier
from leukemia_core.errors import ModelExistsError
from leukemia_core.models.adapted_check import activation_refusals
from leukemia_core.models.folder import (
    ACTIVE_FILE,
    PREVIOUS,
    WEIGHTS_FILE,
    active_model_name,
    check_model_name,
    load_model,
    models_dir,
    replaced_model_name,
    set_active_model,
)
from leukemia_core.models.writing import save_model_folder
from leukemia_core.store import CaseStore
from train.adapt import (
    Adaptation,
    AdaptationError,
    adapt_from_arrays,
    check_cells,
    worse_than_before,
)
from train.card import model_card
from train.cli_model import load_tables
from train.data import FORMATS
from train.evaluate.classifier import seen_groups, seen_in_training, split_groups
from train.fit import app_crop
from train.groups import bank_group
from train.inspection import without_duplicates
from train.progress import ProgressCallback
from train.records import BLAST, CellTable, LabelledCrop
from train.reviewed_cases import export_reviewed_cases, signed_cases_words

SITE_SUFFIX = re.compile(r"-site\d+$")
MANAGED_FILES = frozenset({WEIGHTS_FILE, "config.json", "metrics.json", "card.md"})
_NOT_COPIED = ("format_version", "weights_file", "sha256")  # written afresh on saving
CHUNK = 64  # crops held in memory at once (300 x 300 x 3 bytes each)


def require_sample_ids(table: CellTable, *, allowed: bool = False) -> None:
    """Refuse cells that carry no sample (group) id unless ``allowed``: each would count as a
    sample of its own, so the adaptation's check, split by sample, would be optimistic and its
    card would claim as many samples as cells."""
    if not table.groups_known and not allowed:
        raise AdaptationError(
            "Some of these cells carry no sample or patient id (images directly in the class "
            "folders), so each would count as its own sample and the check of the adaptation "
            "would be optimistic. Put each sample's cells in <class>/<sample>/ folders, or give "
            "a manifest with a group column (on the command line, --allow-ungrouped accepts "
            "them)."
        )


def next_site_name(base: str, root: Path | None = None) -> str:
    """``<base>-site<k>`` with the smallest ``k`` no folder (nor kept ``.previous``) uses.

    An adapted model's name loses its ``-site<k>`` first, so adapting ``m-site1`` again gives
    ``m-site2``, and a kept version (a rollback) its ``.previous``.

    >>> next_site_name("lite0_blast_v1", Path("/nonexistent"))
    'lite0_blast_v1-site1'
    >>> next_site_name("lab.2.previous", Path("/nonexistent"))
    'lab-site1'
    """
    root = root or models_dir()
    stem = SITE_SUFFIX.sub("", replaced_model_name(base) or base)
    k = 1
    while True:
        suffix = f"-site{k}"
        name = stem[: 64 - len(suffix)] + suffix
        if not (root / name).exists() and not (root / f"{name}{PREVIOUS}").exists():
            return name
        k += 1


def _check_new_name(name: str, root: Path) -> str:
    check_model_name(name)
    if (root / name).exists() or (root / f"{name}{PREVIOUS}").exists():
        raise ModelExistsError(
            f"A model folder {name!r} exists already; adaptation writes a new version and "
            "never overwrites one. Choose another name, or leave the name out for the next "
            "free <base>-site<k>."
        )
    return name


def _extra_files(folder: Path) -> dict[str, str | bytes]:
    """The base folder's other files (split.csv, domain.npz, ...), to copy as they are."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in MANAGED_FILES}  # fmt: skip


def _split_with_adaptation(base_split: bytes, groups) -> bytes:
    """The base's ``split.csv`` with the adaptation's groups on the validation side (they set
    the new calibration), so ``--held-out`` never counts the lab's own cells as unseen."""
    rows = list(csv.DictReader(io.StringIO(base_split.decode()))) if base_split else []
    adapted = set(groups)
    # A group the base tested on but the adaptation fitted on is no longer unseen: val, too.
    rows = [{**row, "side": "val"} if row["group"] in adapted else row for row in rows]
    named = {row["group"] for row in rows}
    rows += [{"group": g, "side": "val"} for g in sorted(adapted - named)]
    out = io.StringIO()
    writer = csv.DictWriter(out, ["group", "side"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def adapt_model(
    model_name: str,
    records: Sequence[LabelledCrop],
    *,
    root: Path | None = None,
    new_name: str | None = None,
    min_head_cells: int = 200,
    seed: int = 0,
    data_description: str = "",
    progress: ProgressCallback | None = None,
    user: User,
) -> Path:
    """Adapt ``model_name`` to ``records`` (a lab's signed cells) and save it as a new folder.

    Args:
        model_name: The base model folder; it is read, never changed.
        records: Labelled cells with groups (samples); e.g. the export of signed cases.
        root: Parent of model folders (``models/`` by default).
        new_name: Name of the new folder (default: :func:`next_site_name`).
        min_head_cells: Re-fit the head from this many cells (see :func:`adapt_from_arrays`).
        seed: Seed of the internal check's folds.
        data_description: Words about the cells, for the config and card.
        progress: Receives ``{"stage": "classify", "done", "total"}`` events.
        user: Who adapts (needs the model_admin role; recorded with the new model).

    Returns:
        The new folder. Its ``config.json`` holds ``training.adapted`` with the base, the cells
        used, whether the head was re-fitted and the before/after check figures.

    Raises:
        ModelNotFoundError, ModelIntegrityError: The base model is missing or damaged.
        ModelExistsError: ``new_name`` is taken.
        AdaptationError: Too few cells or samples, one class only (nothing is written).
        PermissionDeniedError: The account may not manage models.
    """
    require(user, Permission.MANAGE_MODELS)
    root = root or models_dir()
    loaded = load_model(model_name, root)
    name = _check_new_name(new_name or next_site_name(loaded.name, root), root)
    # Each picture once (the same smear signed as two cases, a file listed twice), and none
    # labelled both ways, as the comparison's dataset check does; said in the card.
    once = without_duplicates(CellTable(tuple(replace(r, group=bank_group(r)) for r in records)))
    records = list(once.records)
    # Cells of samples the base was fitted or calibrated on: its "before" is in-sample there.
    n_seen = sum(seen_in_training(records, seen_groups(loaded.path), split_groups(loaded.path))[0])
    seen = (f"{n_seen} of the {len(records)} cells belong to samples the base model was trained "
            "or calibrated on, so its 'before' figures are not held-out there."
            if n_seen else "")  # fmt: skip
    data_description = " ".join((data_description, *once.notes, seen)).strip()
    is_blast = np.array([r.label == BLAST for r in records], dtype=bool)
    groups = np.array([r.group for r in records])
    check_cells(is_blast, groups)  # before minutes of loading crops
    features, logits = _classify(Classifier(loaded), records, progress)
    kernel, bias = loaded.keras_model.get_layer("logits").get_weights()
    adaptation = adapt_from_arrays(
        features, is_blast, groups, kernel, bias, calibration=loaded.config.calibration,
        n_views_logits=logits, min_head_cells=min_head_cells, seed=seed,
    )  # fmt: skip
    return _save(loaded, name, adaptation, root, data_description, user, sorted(set(groups)))


def _classify(
    classifier: Classifier, records: Sequence[LabelledCrop], progress: ProgressCallback | None
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits of the records on the app's own classification path (same
    crops, input preparation and test-time views; the features are the logits layer's input,
    averaged over the views as the logits are), :data:`CHUNK` crops in memory at a time."""
    features, logits = [], []
    for start in range(0, len(records), CHUNK):
        outputs = classifier.outputs([app_crop(r) for r in records[start : start + CHUNK]])
        features.append(outputs.features)
        logits.append(outputs.logits)
        if progress:
            done = min(start + CHUNK, len(records))
            progress({"stage": "classify", "done": done, "total": len(records)})
    return np.concatenate(features), np.concatenate(logits)


def _base_metrics(base: Path) -> dict:
    try:
        return json.loads((base / "metrics.json").read_text())
    except (OSError, ValueError):  # a base without readable metrics has no notes to carry
        return {}


def _save(
    loaded, name: str, adaptation: Adaptation, root: Path, data_description: str, user: User,
    groups: list[str],
) -> Path:  # fmt: skip
    """Write the adapted version; ``ACTIVE`` keeps naming the model it named."""
    base = loaded.path
    values = json.loads((base / "config.json").read_text())
    config = {k: v for k, v in values.items() if k not in _NOT_COPIED}
    config["calibration"] = adaptation.calibration.to_dict()
    training = config["training"] = dict(config.get("training") or {})
    training["adapted"] = {
        "base": loaded.name,
        "base_sha256": loaded.checksum,
        "base_calibration": loaded.config.calibration.to_dict(),
        "data": data_description,
        **adaptation.to_dict(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    training["adapted"].pop("calibration")  # the new one is config["calibration"]
    metrics = {"adaptation_check": adaptation.check}
    # The base's split.csv is copied, so are the card's words about it (v1's and v2's tore
    # smear runs; without them the card would say they did not).
    if notes := _base_metrics(base).get("card_notes"):
        metrics["card_notes"] = {k: notes[k] for k in ("split", "limits") if k in notes}
    model = keras.Model.from_config(loaded.keras_model.get_config())
    model.set_weights(loaded.keras_model.get_weights())
    model.get_layer("logits").set_weights([adaptation.kernel, adaptation.bias])
    card = model_card(name, config, metrics)
    if not (root / ACTIVE_FILE).is_file():
        # Without ACTIVE the first folder by name is the default; the new one must not become it.
        active = active_model_name(root)
        if active is not None:
            set_active_model(active, root, user=user, action="keep default")
    _check_new_name(name, root)  # once more, right before writing
    extra = _extra_files(base)
    extra["split.csv"] = _split_with_adaptation(extra.get("split.csv", b""), groups)
    folder = save_model_folder(model, name, config, metrics=metrics, card=card, root=root,
                               extra_files=extra, replace=False)  # fmt: skip
    Accounts().record_model_change(user, "adapt", loaded.name, name, note=data_description)
    return folder


# ------------------------------------------------------------------------- python -m train adapt
def add_adapt_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m train adapt``."""
    parser.add_argument("--model", required=True, help="base model folder (read, never changed)")
    cells = parser.add_mutually_exclusive_group(required=True)
    cells.add_argument("--reviewed-cases", nargs="?", const="", metavar="DATABASE",
                       help="the signed cells of the case record (default database)")  # fmt: skip
    cells.add_argument("--data", type=Path, action="append",
                       help="a folder or CSV manifest of the lab's labelled cells; repeatable")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="layout of --data (detected if omitted)")
    parser.add_argument("--allow-ungrouped", action="store_true",
                        help="accept --data cells without sample ids (the check is optimistic)")  # fmt: skip
    parser.add_argument("--name", help="new model folder (default: <model>-site<k>, next free)")
    parser.add_argument("--min-head-cells", type=int, default=200,
                        help="re-fit the head too from this many cells (default 200)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the internal check's folds")
    parser.add_argument("--describe", default="", help="words about the cells for the card")
    parser.add_argument("--models-dir", type=Path)


def _report(event: dict) -> None:
    print(f"classified {event['done']} of {event['total']} cells", file=sys.stderr)


def adapt_command(args: argparse.Namespace) -> int:
    """Run ``python -m train adapt``: print the new folder and its before/after as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        if args.reviewed_cases is not None:
            store = CaseStore(args.reviewed_cases or None)
            table = export_reviewed_cases(store, Path(tmp) / "reviewed_cases")
            words = signed_cases_words(store, table)
            for note in table.notes:
                print(f"note: {note}", file=sys.stderr)
        else:
            table = load_tables(args.data, args.format)  # as compare reads them; prints notes
            require_sample_ids(table, allowed=args.allow_ungrouped)
            words = ", ".join(str(d) for d in args.data)
        folder = adapt_model(args.model, table.records, root=args.models_dir, new_name=args.name,
                             user=User.shell(),
                             min_head_cells=args.min_head_cells, seed=args.seed,
                             data_description=args.describe or words, progress=_report)  # fmt: skip
    done = json.loads((folder / "config.json").read_text())["training"]["adapted"]
    print(json.dumps({"folder": str(folder), "base": done["base"], "counts": done["counts"],
                      "head_refitted": done["head_refitted"], "before": done["check"]["before"],
                      "after": done["check"]["after"]}, indent=2))  # fmt: skip
    worse = worse_than_before(done["check"])
    if worse:
        print(f"note: on the grouped check the new version does worse than {done['base']}: "
              f"{'; '.join(worse)}.", file=sys.stderr)  # fmt: skip
    if refusals := activation_refusals(
        json.loads((folder / "config.json").read_text())["training"]
    ):
        print(f"note: {folder.name} is kept but cannot become the active model: "
              f"{'; '.join(refusals)}.", file=sys.stderr)  # fmt: skip
    else:
        print(f"note: {folder.name} is a new version and is not active; check it, then make it "
              f"the active model with `python -m train activate {folder.name}` (or the Retrain "
              "page).", file=sys.stderr)  # fmt: skip
    return 0
