"""CSV manifests of single cells (``path,label,group``), and the CSV reader the loaders share.

Re-exported by :mod:`train.data`, whose :func:`~train.data.load_dataset` reads a manifest when
it is given a ``.csv`` file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from train.records import (
    LABELS,
    CellTable,
    DatasetNotFoundError,
    EmptyDatasetError,
    LabelledCrop,
    ManifestError,
    MissingGroupError,
    listed,
)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV, with lower-cased column names and stripped values."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = [
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]  # cells beyond the header (key None) are ignored
        return [(c or "").strip().lower() for c in reader.fieldnames or []], rows


def load_manifest(csv_path: str | Path) -> CellTable:
    """Load a CSV with columns ``path,label,group`` (optional ``source,subset,cell_type``).

    Relative paths are resolved against the CSV's folder; labels are ``blast``/``normal``.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        kind = "is a folder, not a CSV file" if csv_path.is_dir() else "does not exist"
        raise DatasetNotFoundError(f"Manifest {csv_path} {kind}; check the path.")
    header, rows = read_csv(csv_path)
    missing = [c for c in ("path", "label", "group") if c not in header]
    if missing:
        raise ManifestError(
            f"Manifest {csv_path} lacks column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'none'}); needed: path,label,group."
        )
    if not rows:
        raise EmptyDatasetError(f"Manifest {csv_path} has a header but no rows.")
    problems: dict[str, list[str]] = {}
    records = []
    for line, row in enumerate(rows, start=2):
        path = csv_path.parent / row["path"] if row["path"] else None  # absolute paths stay
        label = row["label"].lower()
        bad = {
            "file not found": path is None or not path.is_file(),
            "label not blast/normal": label not in LABELS,
            "no group": not row["group"],
        }
        for kind in (k for k, is_bad in bad.items() if is_bad):
            value = row["label"] if kind.startswith("label") else row["path"]
            problems.setdefault(kind, []).append(f"line {line} ({value!r})")
        if not any(bad.values()):
            records.append(
                LabelledCrop(
                    path,
                    label,
                    row["group"],
                    row.get("source") or "manifest",
                    row.get("subset") or None,
                    row.get("cell_type") or None,
                )
            )
    if problems.keys() == {"no group"}:
        raise MissingGroupError(
            f"Rows without a group in {csv_path}: {listed(problems['no group'])}. Every cell "
            "needs a group (subject or smear-field id); use the file name if nothing better."
        )
    if problems:
        raise ManifestError(
            f"Bad rows in {csv_path}: "
            + "; ".join(f"{kind}: {listed(where)}" for kind, where in problems.items())
            + "."
        )
    return CellTable(tuple(records))
