"""Signed cases of the case record as a manifest dataset, so corrections become training data."""

from __future__ import annotations

import csv
import hmac
import io
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from leukemia_core.imaging import png_bytes
from leukemia_core.store import STATUS_SIGNED, CaseStore, CaseSummary
from leukemia_core.types import CellLabel
from train.records import LABELS, CellTable, DatasetError, EmptyDatasetError, LabelledCrop

REVIEWED_SOURCE = "reviewed_cases"
MANIFEST_COLUMNS = ("path", "label", "group", "source", "subset", "cell_type")


def case_group(case, key: bytes) -> str:
    """The split group of a case's cells: its patient where the case names one (two smears of
    one patient on both sides of a split would flatter the model), else its sample. Both as
    pseudonyms keyed with the database's own key (:meth:`CaseStore.pseudonym_key`): the
    manifest travels with training data and must not name anyone, and a bare hash of a record
    number is undone by hashing every number."""
    # One patient typed "MRN-1" on one case and "mrn 1" on another is still one patient (two
    # ids that differ only so are taken as one: a coarser group never leaks across a split).
    patient = re.sub(r"[\W_]+", "", case.patient_id or "").casefold()
    kind, said = ("patient", patient) if patient else ("sample", case.sample_id)
    return f"{kind}-" + hmac.new(key, f"{kind}:{said}".encode(), "sha256").hexdigest()[:16]


def signed_cases_words(store: CaseStore, table: CellTable) -> str:
    """What an adapted model was fitted on, for its config and card (shown to every user, so
    it names the database's file, never the server's folders)."""
    n_cases = len({r.subset for r in table})
    return f"signed cases of the case record {store.path.name} ({n_cases} case(s))"


def _cell_type(cell) -> str:
    """How a person came to the cell's label: ``redrawn`` (made by a split or merge),
    ``decided`` (the model left it uncertain: no correction), ``corrected`` (the model said
    otherwise), ``confirmed``."""
    if cell.origin:
        return "redrawn"
    if cell.model_label == CellLabel.UNCERTAIN:
        return "decided"
    return "corrected" if cell.changed_by_reviewer else "confirmed"


def export_reviewed_cases(store: CaseStore, out_dir: Path) -> CellTable:
    """Write the reviewed blast/normal cells of signed cases as a manifest dataset.

    Takes the newest signed version of each case lineage (reopening creates a version whose
    ``parent_id`` is the old one); a signed case confirms every label. Each cell labelled
    blast or normal with a crop becomes ``out_dir/cells/<case>_f<field>_c<cell>.png`` and a
    row of ``out_dir/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`): group = the patient
    (:func:`case_group`: one patient's smears stay on one side of a split), source
    ``"reviewed_cases"``, subset = case id,
    cell_type as :func:`_cell_type` says (``confirmed``, ``corrected``, ``decided``,
    ``redrawn``). Everything is written to a temporary folder and renamed into place; an
    earlier export in ``out_dir`` is replaced.

    Raises:
        EmptyDatasetError: No signed case holds reviewed blast or normal cells with crops.
        DatasetError: ``out_dir`` holds files that are not an earlier export.
    """
    out_dir = Path(out_dir).expanduser()
    _check_export_target(out_dir)
    chosen, being_corrected = _newest_signed(store)
    key = store.pseudonym_key()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        rows, skipped, altered = [], Counter(), []
        for summary in chosen:
            case = store.load_case(summary.case_id)
            if case.altered:  # changed outside the app: its labels are not the signer's
                altered.append(case.sample_id)
                continue
            for cell in case.cells:
                if cell.label not in LABELS:
                    skipped["other"] += 1
                    continue
                if cell.crop is None:
                    skipped["no_crop"] += 1
                    continue
                relative = f"cells/{case.case_id}_f{cell.field_index}_c{cell.cell_id}.png"
                (tmp / relative).parent.mkdir(exist_ok=True)
                (tmp / relative).write_bytes(png_bytes(cell.crop))
                rows.append((relative, cell.label, case_group(case, key), case.case_id,
                             _cell_type(cell)))  # fmt: skip
        if not rows:
            corrected = (f" ({being_corrected} more case(s) had a signed version but were reopened "
                         "and are not signed again: sign them to use their cells)"
                         if being_corrected else "")  # fmt: skip
            if altered:
                corrected += (f" ({len(altered)} signed case(s) were changed outside the app "
                              "and are left out)")  # fmt: skip
            raise EmptyDatasetError(
                f"No signed case with reviewed blast or normal cells (with crop images) in the "
                f"case database {store.path.name}: {len(chosen)} signed case(s) to read"
                f"{corrected}. To get some, analyze a smear, review its cells on the Review "
                "cells page (relabel what the model got wrong) and sign the case on the Case & "
                "sign-off page; then try again."
            )
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(
            (p, label, g, REVIEWED_SOURCE, case_id, kind) for p, label, g, case_id, kind in rows
        )
        (tmp / "manifest.csv").write_text(text.getvalue(), encoding="utf-8")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    records = tuple(
        LabelledCrop(out_dir / p, label, g, REVIEWED_SOURCE, case_id, kind)
        for p, label, g, case_id, kind in rows
    )
    n_groups = len({r.group for r in records})
    note = (
        f"{len(records)} reviewed cell(s) of {len(chosen)} signed case(s), {n_groups} "
        f"patient(s) or sample(s); left out {skipped['other']} cell(s) not labelled blast/normal and "
        f"{skipped['no_crop']} without a crop image."
    )
    if being_corrected:
        note += (f" Left out {being_corrected} signed case(s) reopened and not signed again "
                 "(their labels are being corrected).")  # fmt: skip
    if altered:
        note += (f" Left out {len(altered)} case(s) whose record was changed outside the app "
                 f"({', '.join(sorted(altered))}): their audit chain no longer matches them; "
                 "see the Case list.")  # fmt: skip
    return CellTable(records, (note,))


def _newest_signed(store: CaseStore) -> tuple[list[CaseSummary], int]:
    """The newest version of each case lineage where it is signed, in (sample, creation) order;
    a lineage whose newest version was reopened and is not signed again is left out (its labels
    are being corrected)."""
    cases = {c.case_id: c for c in store.list_cases(limit=sys.maxsize)}

    def lineage(case_id: str) -> str:
        while cases[case_id].parent_id in cases:
            case_id = cases[case_id].parent_id
        return case_id

    newest: dict[str, CaseSummary] = {}
    for case in cases.values():
        root = lineage(case.case_id)
        if root not in newest or case.version > newest[root].version:
            newest[root] = case
    signed = [c for c in newest.values() if c.status == STATUS_SIGNED]
    reopened = sum(c.status != STATUS_SIGNED and c.parent_id in cases for c in newest.values())
    return sorted(signed, key=lambda c: (c.sample_id, c.created_at, c.case_id)), reopened


def _is_export(folder: Path) -> bool:
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return True
    if "manifest.csv" not in entries or not entries <= {"manifest.csv", "cells"}:
        return False
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return tuple(next(csv.reader(f), ())) == MANIFEST_COLUMNS


def _check_export_target(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and _is_export(out_dir)):
        found = "is a file" if not out_dir.is_dir() else "holds files of another kind"
        raise DatasetError(
            f"Export folder {out_dir} {found}; only an empty folder or an earlier export of "
            "reviewed cases (manifest.csv + cells/) is replaced. Choose a new folder."
        )


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, swapping out an earlier export as a whole."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
