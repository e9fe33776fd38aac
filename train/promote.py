"""Promotion: a compared model of a finished run becomes the active model of the app.

The run's ``results.json`` is what a promotion is judged by (:func:`~train.compare_tables.
promotion_refusals`); its staged first-fold folder is what is installed, written again whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from leukemia_core.models.config import DOMAIN_FILE
from leukemia_core.models.folder import (
    CONFIG_FILE,
    PROMOTED_FROM,
    check_model_name,
    load_model,
    models_dir,
    set_active_model,
)
from leukemia_core.models.writing import save_model_folder
from leukemia_core.roles import Permission, User, require
from train.card import model_card
from train.compare_settings import MODELS_SUBDIR, RESULTS_FILE, SIZE_BASELINE
from train.compare_tables import promotion_refusals, unmeasured_classes
from train.evaluate.classifier import SPLIT_FILE

MIN_REASON_CHARACTERS = 20  # "ok" is no reason


def reason_is_enough(text: str) -> bool:
    """Whether a typed reason may override promotion's refusals (words, not "ok")."""
    return len(" ".join(str(text or "").split())) >= MIN_REASON_CHARACTERS


def promote(
    run_dir: Path, architecture: str, name: str, *, user: User, root: Path | None = None,
    despite: str = "",
) -> Path:  # fmt: skip
    """Make a compared model the active one: a complete model folder under ``root``.

    The staged folder is loaded (checksum verified) and written again atomically as
    ``root/name``; an existing folder of that name is kept as ``name.previous``; ``ACTIVE``
    then names it, so the Analyze page uses it from its next run without a restart. Needs an
    account allowed to manage models; recorded with who and when. A model the checks refuse
    (:func:`~train.compare_tables.promotion_refusals`) is promoted only with ``despite``, the
    administrator's reason in words, which its card and the model-change record keep with the
    refusals it overrode.
    """
    require(user, Permission.MANAGE_MODELS)
    results_file = Path(run_dir) / RESULTS_FILE
    if not results_file.is_file():
        raise ValueError(
            f"{run_dir} holds no finished comparison ({RESULTS_FILE} is missing): "
            "only models of a finished run can be promoted."
        )
    results = json.loads(results_file.read_text())
    if (results.get("settings") or {}).get("protocol") == "leave_one_source_out":
        raise ValueError(
            f"{run_dir} is a leave-one-source-out run: each of its models lacks one source, so "
            "it measures a recipe and none is promotable. Run a grouped comparison (the default "
            "protocol) of the recipe you chose and promote from that."
        )
    rows = {row["model"]: row for row in results["table"]}
    if rows.get(architecture, {}).get("status") != "done" or architecture == SIZE_BASELINE:
        done = [m for m, row in rows.items() if row["status"] == "done" and m != SIZE_BASELINE]
        raise ValueError(
            f"{architecture!r} did not finish in this run; promotable: {', '.join(done) or 'none'}."
        )
    refusals = promotion_refusals(results, architecture)
    despite = " ".join(str(despite or "").split())
    unmeasured = bool(unmeasured_classes(results, architecture))
    if refusals and (unmeasured or not reason_is_enough(despite)):
        override = "" if unmeasured else (
            " (to promote it all the same, give your reason in words, at least "
            f"{MIN_REASON_CHARACTERS} characters: it is kept in its card and the model changes)")  # fmt: skip
        raise ValueError(
            f"{architecture} of this run cannot become the active model: "
            + "; ".join(refusals) + ". Train on labelled cells from more subjects and compare "
            f"again, or keep the current model{override}."
        )  # fmt: skip
    check_model_name(name)
    staged = Path(run_dir) / MODELS_SUBDIR
    loaded = load_model(architecture, root=staged)
    folder = staged / architecture
    config = json.loads((folder / "config.json").read_text())
    for key in ("sha256", "weights_file", "format_version"):
        config.pop(key, None)
    config["training"][PROMOTED_FROM] = str(Path(run_dir).resolve())
    metrics = json.loads((folder / "metrics.json").read_text())
    overridden = ""
    if refusals:  # said in its card for every later reader, and in the model changes
        overridden = f"promoted by {user.name} despite: {'; '.join(refusals)}. Reason: {despite}"
        metrics.setdefault("card_sections", {})["Promoted despite the checks"] = (
            overridden[0].upper() + overridden[1:])  # fmt: skip
    extra: dict[str, str | bytes] = {
        file: (folder / file).read_bytes() for file in (SPLIT_FILE, DOMAIN_FILE)
        if (folder / file).exists()
    }  # fmt: skip
    target = save_model_folder(loaded.keras_model, name, config, metrics=metrics,
                               card=model_card(name, config, metrics), root=root,
                               extra_files=extra)  # fmt: skip
    set_active_model(name, root, user=user, action="promote", note=overridden)
    return target


def promotions_of(run_dir: Path, root: Path | None = None) -> list[tuple[str, str]]:
    """``(model folder, architecture)`` of each model promoted from this comparison run, found
    by the :data:`PROMOTED_FROM` its config records; a kept ``<name>.previous`` folder counts
    (it was replaced since), hidden staging folders and unreadable configs do not."""
    root, source = root or models_dir(), str(Path(run_dir).resolve())
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder.name.startswith(".") or not (folder / CONFIG_FILE).is_file():
            continue
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            continue  # a damaged folder is reported where it is loaded
        training = config.get("training") if isinstance(config, dict) else None
        # An adapted version inherits its base's training record: it was made by Adapt.
        if (isinstance(training, dict) and training.get(PROMOTED_FROM) == source
                and "adapted" not in training):  # fmt: skip
            found.append((folder.name, str(config.get("architecture", "?"))))
    return found
