"""Tests of dataset picking: summaries and refusals (train.inspection), safe zip unpacking
(train.archives) and reviewed-case export (train.reviewed_cases).

Datasets are tiny real images written to ``tmp_path`` (helpers of tests/test_data.py); zips are
built in memory, the unsafe ones by hand-patching their headers; cases go into a real
:class:`CaseStore` under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data import make_cnmc, make_folders, write_image, write_text

from leukemia_core.store import CaseStore
from leukemia_core.types import Cell, Field
from train.archives import UnsafeArchiveError, extract_zip
from train.data import load_dataset, load_manifest, summarize
from train.inspection import (
    DatasetSource,
    DatasetSummary,
    GroupCount,
    inspect_dataset,
    inspect_datasets,
)
from train.records import (
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    MissingGroupError,
    SingleClassError,
    UnreadableFileError,
)
from train.reviewed_cases import case_group, export_reviewed_cases


def make_subjects(root: Path, layout: dict[str, list[str]]) -> Path:
    """``{"blast/P01": ["a.png"], ...}``: class folders with one subfolder per subject."""
    for folder, names in layout.items():
        for name in names:
            write_image(root / folder / name)
    return root


SUBJECTS = {
    "blast/P01": ["a.png", "b.png"],
    "blast/P02": ["c.png"],
    "normal/P01": ["d.png"],
    "normal/P03": ["e.png", "f.png", "g.png"],
}


# ----------------------------------------------------------------------------- summaries
def test_cnmc_summary_counts_per_class_group_and_source(tmp_path):
    table, summary = inspect_dataset(make_cnmc(tmp_path))
    assert (summary.location, summary.format) == (str(tmp_path), "cnmc")
    assert (summary.n_cells, len(table)) == (9, 9)
    assert summary.per_class == {"blast": 5, "normal": 4}
    assert summary.per_source == {"cnmc": 9}
    assert (summary.n_groups, summary.groups_known) == (6, True)
    frame = summary.group_frame()
    assert list(frame.columns) == ["group", "source", "blast", "normal", "total"]
    assert frame.values.tolist() == [
        ["1", "cnmc", 2, 0, 2],
        ["57", "cnmc", 2, 0, 2],
        ["H2", "cnmc", 0, 2, 2],
        ["2", "cnmc", 1, 0, 1],
        ["H1", "cnmc", 0, 1, 1],
        ["H24", "cnmc", 0, 1, 1],
    ]
    assert any("unlabelled" in note for note in summary.notes)
    assert json.loads(json.dumps(summary.to_dict())) == summary.to_dict()
    assert summary.to_dict()["groups"][0] == {
        "group": "1",
        "source": "cnmc",
        "n_blast": 2,
        "n_normal": 0,
    }


def test_manifest_summary_joins_sources_that_share_a_group(tmp_path):
    for name in "abcde":
        write_image(tmp_path / "cells" / f"{name}.png")
    csv_path = write_text(
        tmp_path / "m.csv",
        "path,label,group,source\ncells/a.png,blast,p1,labA\ncells/b.png,normal,p1,labA\n"
        "cells/c.png,normal,p2,labB\ncells/d.png,blast,p3,labB\ncells/e.png,normal,p3,labA\n",
    )
    _, summary = inspect_dataset(csv_path)
    assert summary.format == "manifest" and summary.n_cells == 5
    assert summary.per_class == {"blast": 2, "normal": 3}
    assert summary.per_source == {"labA": 3, "labB": 2}
    assert summary.groups == (
        GroupCount("p1", "labA", 1, 1),
        GroupCount("p3", "labA, labB", 1, 1),
        GroupCount("p2", "labB", 0, 1),
    )
    assert summary.group_frame()["total"].tolist() == [2, 2, 1]


def test_subject_subfolders_give_groups_shared_across_classes(tmp_path):
    table, summary = inspect_dataset(make_subjects(tmp_path / "lab", SUBJECTS))
    assert {r.path.name: r.group for r in table} == {
        "a.png": "P01",
        "b.png": "P01",
        "c.png": "P02",
        "d.png": "P01",
        "e.png": "P03",
        "f.png": "P03",
        "g.png": "P03",
    }
    assert summary.groups_known and summary.format == "folders"
    assert summary.groups == (
        GroupCount("P01", "lab", 2, 1),
        GroupCount("P03", "lab", 0, 3),
        GroupCount("P02", "lab", 1, 0),
    )
    assert any("<class>/<subject>/" in note for note in summary.notes)


def test_allow_ungrouped_accepts_loose_files_and_says_so(tmp_path):
    table, summary = inspect_dataset(make_folders(tmp_path), allow_ungrouped=True)
    assert summary.groups_known is False and not table.groups_known
    assert summary.n_groups == summary.n_cells == 6
    assert summary.per_class == {"blast": 2, "normal": 4}
    assert any("Groups unknown" in n and "optimistic" in n for n in summary.notes)


def test_several_locations_need_both_classes_only_in_the_union(tmp_path):
    blasts = make_subjects(tmp_path / "b", {"Early/P1": ["a.png"], "Early/P2": ["b.png"]})
    normals = make_subjects(tmp_path / "n", {"lymphocyte/N1": ["c.png"]})
    _, summary = inspect_datasets(
        [DatasetSource(blasts, label_map={"Early": "blast"}), str(normals)]
    )
    assert summary.per_class == {"blast": 2, "normal": 1}
    assert summary.per_source == {"b": 2, "n": 1} and summary.format == "folders"
    assert summary.location == f"{blasts}; {normals}"
    _, mixed = inspect_datasets([make_cnmc(tmp_path / "c"), normals])
    assert mixed.format == "cnmc+folders" and mixed.n_groups == 7


def test_verify_false_skips_decoding(tmp_path):
    root = make_subjects(tmp_path, SUBJECTS)
    (root / "blast" / "P01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert inspect_dataset(root, verify=False)[1].n_cells == 8


# ----------------------------------------------------------------------------- refusals
def _single_class(root: Path) -> Path:
    return make_subjects(root, {"lymphocyte/H1": ["a.png", "b.png"], "ig/H2": ["c.png"]})


def _unreadable(root: Path) -> Path:
    make_subjects(root, SUBJECTS)
    (root / "blast" / "P01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _idb2_without_fields(root: Path) -> Path:
    for name in ["Im001_1.tif", "Im003_0.tif"]:
        write_image(root / "images" / name)
    return root


def _empty(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    return root


REFUSALS = [
    (lambda r: r / "nowhere", {}, DatasetNotFoundError, r"nowhere does not exist; check the path"),
    (_empty, {}, EmptyDatasetError, r"is empty: copy the labelled cells into it"),
    (
        _single_class,
        {},
        SingleClassError,
        r"only normal cells \(3\); a classifier needs blast and normal cells\. Add a dataset "
        r"with blast cells",
    ),
    (_unreadable, {}, UnreadableFileError, r"1 image\(s\) cannot be decoded: .*broken\.png"),
    (
        make_folders,
        {},
        MissingGroupError,
        r"carry no subject or field id .*both sides of the split and the test scores would be "
        r"inflated\. Put each subject's cells in <class>/<subject>/ .*CSV manifest .*"
        r"--allow-ungrouped on the command line",
    ),
    (
        lambda r: make_subjects(r, {**SUBJECTS, "normal": ["loose.png"]}),
        {},
        MissingGroupError,
        r"carry no subject or field id",
    ),
    (_idb2_without_fields, {}, MissingGroupError, r"ALL-IDB2 crops without source_fields\.csv"),
    (make_cnmc, {"format": "imagenet"}, DatasetError, r"Unknown dataset format 'imagenet'"),
]


@pytest.mark.parametrize(("build", "kwargs", "error", "match"), REFUSALS)
def test_inspect_refusals(tmp_path, build, kwargs, error, match):
    with pytest.raises(error, match=match):
        inspect_dataset(build(tmp_path / "set"), **kwargs)


def test_union_refusals_name_the_problem(tmp_path):
    only_normal = _single_class(tmp_path / "a")
    more_normal = make_subjects(tmp_path / "b", {"neutrophil/H9": ["x.png"]})
    with pytest.raises(SingleClassError, match=r"a; .*b holds only normal cells \(4\)"):
        inspect_datasets([only_normal, more_normal])
    loose = make_folders(tmp_path / "loose")
    with pytest.raises(MissingGroupError, match=r"Cells in .*loose carry no subject") as caught:
        inspect_datasets([make_cnmc(tmp_path / "c"), loose])
    assert str(tmp_path / "c") not in str(caught.value)
    with pytest.raises(EmptyDatasetError, match="No dataset location was given"):
        inspect_datasets([])


def test_a_class_of_damaged_files_is_called_damaged_not_just_one_class(tmp_path):
    """Three identical undecodable files under lymphocyte/ read as "only normal cells (1)"."""
    root = make_subjects(tmp_path / "set", {"lymphocyte/P2": ["a.png"]})
    for name in ("a.png", "b.png", "c.png"):
        (root / "lymphocyte" / "P2" / name).write_bytes(b"not a picture")
    with pytest.raises(SingleClassError, match=r"none of them decodes as a picture: .*\.png"):
        inspect_dataset(root)
    with pytest.raises(SingleClassError) as quick:  # without decoding, nothing is claimed
        inspect_dataset(root, verify=False)
    assert "decode" not in str(quick.value)


# ----------------------------------------------------------------------------- zip archives
def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def png_bytes(color: tuple[int, int, int] = (200, 100, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def patch_headers(data: bytes, name: bytes, *, flags: int = 0, file_size: int | None = None):
    """Set flag bits and/or the declared uncompressed size of member ``name`` in both headers."""
    data = bytearray(data)
    headers = ((b"PK\x03\x04", 6, 22, 30), (b"PK\x01\x02", 8, 24, 46))  # local, central
    for signature, flag_at, size_at, name_at in headers:
        start = data.find(signature)
        while data[start + name_at : start + name_at + len(name)] != name:
            start = data.find(signature, start + 1)
        (old_flags,) = struct.unpack_from("<H", data, start + flag_at)
        struct.pack_into("<H", data, start + flag_at, old_flags | flags)
        if file_size is not None:
            struct.pack_into("<I", data, start + size_at, file_size)
    return bytes(data)


def special_member(name: str, mode: int, payload: bytes = b"target.png") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("data/blast/P1/a.png", png_bytes())
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: the mode lives in the high 16 bits
        info.external_attr = mode << 16
        zf.writestr(info, payload)
    return buffer.getvalue()


DATASET_ZIP = {
    "mydata/": b"",
    "mydata/blast/P01/a.png": png_bytes((220, 60, 60)),
    "mydata/blast/P02/b.png": png_bytes((210, 70, 70)),
    "mydata/normal/P03/c.png": png_bytes((90, 90, 200)),
    "mydata/.DS_Store": b"junk",
    "__MACOSX/mydata/._a.png": b"junk",
}


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*")) if dest.exists() else []


@pytest.mark.parametrize("kind", ["path", "bytes", "upload"])
def test_good_zip_round_trips_to_its_single_top_folder(tmp_path, kind):
    data = zip_bytes(DATASET_ZIP)
    (tmp_path / "My Data.zip").write_bytes(data)
    upload = io.BytesIO(data)
    upload.name = "My Data.zip"  # as Streamlit's UploadedFile
    archive = {"path": tmp_path / "My Data.zip", "bytes": data, "upload": upload}[kind]
    root = extract_zip(archive, tmp_path / "uploads")
    assert root.name == "mydata" and root.parent.parent == tmp_path / "uploads"
    stem = "archive" if kind == "bytes" else "My_Data"
    digest = hashlib.sha256(data).hexdigest()[:16]  # one folder per archive content
    assert root.parent.name == f"{stem}-{digest}"
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [root.parent.name]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["blast/P01/a.png", "blast/P02/b.png", "normal/P03/c.png"]
    assert not (root.parent / "__MACOSX").exists()
    assert (root / "blast" / "P01" / "a.png").read_bytes() == DATASET_ZIP["mydata/blast/P01/a.png"]
    _, summary = inspect_dataset(root)
    assert summary.per_class == {"blast": 2, "normal": 1} and summary.n_groups == 3


def test_zip_without_single_top_folder_returns_the_new_folder(tmp_path):
    data = zip_bytes({"blast/P1/a.png": png_bytes(), "normal/P2/b.png": png_bytes()})
    first = extract_zip(data, tmp_path)
    second = extract_zip(data, tmp_path)  # same archive again: the same folder, not a copy
    assert first == second and first.parent == tmp_path
    assert sorted(p.name for p in first.iterdir()) == ["blast", "normal"]


def test_a_zip_holding_its_folder_beside_a_readme_is_read_from_that_folder(tmp_path):
    """A lab zipped leukemia_cells/{blast,normal}/<patient>/ with a README: the loader took
    leukemia_cells for one class folder named like leukemia and called every normal cell a blast."""
    members = {f"leukemia_cells/{k.removeprefix('mydata/')}": v
               for k, v in DATASET_ZIP.items() if k.startswith("mydata/")}  # fmt: skip
    root = extract_zip(zip_bytes({"README.txt": b"cells of our lab\n", **members}), tmp_path)
    assert root.name == "leukemia_cells"
    _, summary = inspect_dataset(root)
    assert summary.per_class == {"blast": 2, "normal": 1} and summary.n_groups == 3


def test_a_class_folder_that_holds_class_folders_is_refused_naming_the_right_folder(tmp_path):
    """The folder above the dataset picked: its one "class folder" leukemia_cells read as blast."""
    inner = tmp_path / "upload" / "leukemia_cells"
    write_image(inner / "blast" / "P01" / "a.png", (220, 60, 60))
    write_image(inner / "normal" / "P02" / "b.png", (90, 90, 200))
    with pytest.raises(DatasetError, match=r"holds class folders itself \(blast, normal\): pick "
                       r".*leukemia_cells, the folder that holds the class folders"):  # fmt: skip
        inspect_dataset(tmp_path / "upload")


def test_cells_saved_as_webp_are_read_as_the_app_reads_them(tmp_path):
    """Training skipped .webp and .gif cells unsaid (the app reads them)."""
    write_image(tmp_path / "set" / "blast" / "P01" / "a.png", (220, 60, 60))
    Image.new("RGB", (8, 8), (90, 90, 200)).save(tmp_path / "set" / "normal.webp", "WEBP")
    (tmp_path / "set" / "normal" / "P02").mkdir(parents=True)
    (tmp_path / "set" / "normal.webp").rename(tmp_path / "set" / "normal" / "P02" / "b.webp")
    _, summary = inspect_dataset(tmp_path / "set")
    assert summary.per_class == {"blast": 1, "normal": 1}


def test_fit_calibrate_and_adapt_read_datasets_with_the_checks_compare_uses(tmp_path):
    """train fit read datasets without the dataset check: a picture filed under two patients
    went to both sides of its split, and cells without patient ids trained unsaid."""
    from train.cli_model import load_tables

    write_image(tmp_path / "set" / "blast" / "P01" / "a.png", (220, 60, 60))
    write_image(tmp_path / "set" / "normal" / "P02" / "b.png", (90, 90, 200))
    (tmp_path / "set" / "normal" / "P03").mkdir()
    shutil.copy(tmp_path / "set" / "normal" / "P02" / "b.png", tmp_path / "set" / "normal" / "P03")
    table = load_tables([tmp_path / "set"], None)
    assert sorted(r.group for r in table.records) == ["P01", "P02"]  # the copy left out
    write_image(tmp_path / "loose" / "blast" / "a.png", (220, 60, 60))
    write_image(tmp_path / "loose" / "normal" / "b.png", (90, 90, 200))
    with pytest.raises(DatasetError, match="subject"):
        load_tables([tmp_path / "loose"], None, allow_ungrouped=False)


def test_a_cell_that_cannot_be_read_in_training_is_named_by_its_whole_path(tmp_path):
    """Every patient folder holds a c1.png: the compare command named only 'c1.png'."""
    from leukemia_core.models.inputs import InputSpec
    from train.fit import load_crops
    from train.records import LabelledCrop, UnreadableFileError

    cut = tmp_path / "blast" / "P03" / "c1.png"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(png_bytes()[:40])
    with pytest.raises(UnreadableFileError, match=rf"^{re.escape(str(cut))}: .*python -m train "
                       r"inspect.*--skip-unreadable"):  # fmt: skip
        load_crops([LabelledCrop(cut, "blast", "P03", "lab")], InputSpec(32, "unit"))


BOMB = b"\0" * (2 << 20)  # 2 MiB of zeros deflate ~1000-fold
FIVE = {f"d/{i}.png": png_bytes() for i in range(5)}
ZIP_REFUSALS = [
    (zip_bytes({"d/a.png": png_bytes(), "../evil.png": b"x"}), {}, r"'\.\./evil\.png' climbs out"),
    (zip_bytes({"d/../../evil.png": b"x"}), {}, r"'d/\.\./\.\./evil\.png' climbs out"),
    (zip_bytes({"d\\..\\..\\evil.png": b"x"}), {}, r"climbs out"),
    (zip_bytes({"/etc/evil.png": b"x"}), {}, r"'/etc/evil\.png' has an absolute path"),
    (zip_bytes({"C:/evil.png": b"x"}), {}, r"'C:/evil\.png' has an absolute path"),
    (special_member("data/link.png", stat.S_IFLNK | 0o777), {}, r"'data/link\.png' is a symbolic"),
    (special_member("data/fifo", stat.S_IFIFO | 0o644, b""), {}, r"'data/fifo' is a special file"),
    (zip_bytes(FIVE), {"max_files": 3}, r"5 entries, more than the limit of 3; split"),
    # the count the archive declares at its end refuses it before zipfile reads every entry
    (
        zip_bytes(FIVE)[:-14] + (60_000).to_bytes(2, "little") * 2 + zip_bytes(FIVE)[-10:],
        {"max_files": 1000},
        r"60,000 entries, more than the limit of 1,000; split",
    ),
    (
        zip_bytes({"d/a.png": png_bytes(), "d/zeros.bin": BOMB}),
        {},
        r"'d/zeros\.bin' expands \d+-fold",
    ),
    (
        zip_bytes(FIVE),
        {"max_total_bytes": 200},
        r"'d/\d\.png' brings the unpacked size past the limit of 200 bytes",
    ),
    (
        patch_headers(
            zip_bytes({"d/a.png": png_bytes(), "d/zeros.bin": BOMB}), b"d/zeros.bin", file_size=1000
        ),
        {},
        r"'d/zeros\.bin' is corrupt or cannot be unpacked \(Bad CRC-32",
    ),
    (patch_headers(zip_bytes(FIVE), b"d/2.png", flags=0x1), {}, r"'d/2\.png' is encrypted"),
    (
        zip_bytes({"d/a.png": b"x", "d/a.png/b.png": b"y"}),
        {},
        r"'d/a\.png' is both a file and a folder",
    ),
    (b"PK\x03\x04 this is not a zip", {}, r"not a zip archive, or is corrupt"),
    (zip_bytes(FIVE)[:-30], {}, r"not a zip archive, or is corrupt"),
    (
        zip_bytes(FIVE),
        {"max_archive_bytes": 100},
        r"archive is \d+ bytes, over the limit of 100 bytes",
    ),
]


@pytest.mark.parametrize(("data", "limits", "match"), ZIP_REFUSALS)
def test_unsafe_zips_are_refused_and_leave_nothing(tmp_path, data, limits, match):
    dest = tmp_path / "uploads"
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_zip(data, dest, **limits)
    assert leftovers(dest) == []
    assert not (tmp_path / "evil.png").exists() and not Path("/etc/evil.png").exists()


def test_members_are_counted_while_written_whatever_they_declare(tmp_path, monkeypatch):
    # zipfile itself stops at the declared size; this stands in for a reader that does not.
    data = zip_bytes({"d/a.png": png_bytes(), "d/b.png": b"x" * 10})
    real_open = zipfile.ZipFile.open

    def lying_open(self, info, *args, **kwargs):
        return io.BytesIO(b"x" * 5000) if info.filename == "d/b.png" else real_open(self, info)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(UnsafeArchiveError, match=r"'d/b\.png' unpacks to more than the 10 bytes"):
        extract_zip(data, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_duplicate_members_and_empty_zips_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("d/a.png", b"first")
        zf.writestr("d/a.png", b"second")
    with pytest.raises(UnsafeArchiveError, match=r"'d/a\.png' appears twice"):
        extract_zip(buffer.getvalue(), tmp_path)
    with pytest.raises(EmptyDatasetError, match="holds no files"):
        extract_zip(zip_bytes({"d/": b"", "__MACOSX/._x": b"junk"}), tmp_path)
    assert leftovers(tmp_path) == []
    with pytest.raises(DatasetNotFoundError, match=r"gone\.zip does not exist"):
        extract_zip(tmp_path / "gone.zip", tmp_path)


# ----------------------------------------------------------------------------- reviewed cases
def crop(value: int) -> np.ndarray:
    return np.full((6, 6, 3), value, np.uint8)


def add_case(store: CaseStore, sample_id: str, labels: list[str]) -> str:
    """One field; cell ``i`` (from 1) has a grey crop of value ``10 * i``, except cell 5."""
    cells = [
        Cell(i, (10 * i, 0, 10 * i + 6, 6), (10 * i + 3.0, 3.0),
             crop=None if i == 5 else crop(10 * i), blast_probability=0.5, model_label=label,
             reviewed=True)
        for i, label in enumerate(labels, start=1)
    ]  # fmt: skip
    return store.create_case(
        sample_id,
        [Field(0, "field.png", np.zeros((48, 64, 3), np.uint8))],
        cells,
        model_name="tiny",
        model_checksum="sha256:0",
        thresholds={},
        created_by="Dr. A",
    )


@pytest.fixture
def reviewed(tmp_path) -> tuple[CaseStore, str, str]:
    """S-1 signed (cell 2 relabelled normal -> blast; cell 5 has no crop), S-2 still open."""
    store = CaseStore(tmp_path / "cases.sqlite3")
    signed = add_case(store, "S-1", ["blast", "normal", "normal", "not_wbc", "blast", "excluded"])
    store.relabel_cell(signed, 0, 2, "blast", reviewer="Dr. A")
    store.sign_case(signed, reviewer="Dr. A")
    open_case = add_case(store, "S-2", ["blast", "uncertain", "normal"])
    return store, signed, open_case


def test_export_takes_signed_cases_only(tmp_path, reviewed):
    store, signed, _ = reviewed
    out = tmp_path / "training" / "reviewed"
    table = export_reviewed_cases(store, out)
    got = [(r.path.name, r.label, r.group, r.source, r.subset, r.cell_type) for r in table]
    group = case_group(store.load_case(signed), store.pseudonym_key())
    assert got == [
        (f"{signed}_f0_c1.png", "blast", group, "reviewed_cases", signed, "confirmed"),
        (f"{signed}_f0_c2.png", "blast", group, "reviewed_cases", signed, "corrected"),
        (f"{signed}_f0_c3.png", "normal", group, "reviewed_cases", signed, "confirmed"),
    ]
    # the sample id is an accession number: pseudonymous, and in nobody's spreadsheet formula
    assert group.startswith("sample-") and "S-1" not in (out / "manifest.csv").read_text()
    for record, value in zip(table, (10, 20, 30), strict=True):
        with Image.open(record.path) as image:
            assert np.asarray(image.convert("RGB"))[0, 0].tolist() == [value] * 3
    assert load_manifest(out / "manifest.csv").records == table.records
    assert table.notes == (
        "3 reviewed cell(s) of 1 signed case(s), 1 patient(s) or sample(s); left out 2 cell(s) not labelled "
        "blast/normal and 1 without a crop image.",
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["reviewed"]
    assert summarize(table)["per_group"] == {group: 3}


def test_export_leaves_out_a_signed_case_changed_outside_the_app(tmp_path, reviewed):
    """A label edited in the database, or an open case marked signed by hand, became training
    data though the record reports itself altered."""
    import sqlite3

    store, signed, open_case = reviewed
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE cases SET status = 'signed' WHERE case_id = ?", (open_case,))
    assert store.load_case(open_case).altered
    table = export_reviewed_cases(store, tmp_path / "reviewed")
    assert {r.subset for r in table} == {signed}
    assert "Left out 1 case(s) whose record was changed outside the app (S-2)" in table.notes[0]
    with sqlite3.connect(store.path) as conn:  # past the store's guards, as a tamperer would
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE cells SET label = 'normal' WHERE case_id = ? AND cell_id = 1",
                     (signed,))  # fmt: skip
    with pytest.raises(EmptyDatasetError, match=r"2 signed case\(s\) were changed outside the app"):
        export_reviewed_cases(store, tmp_path / "again")


def test_export_calls_a_split_piece_redrawn_not_confirmed(tmp_path):
    """A cell a reviewer's split made was never called by the model: its label is neither a
    confirmation nor a correction of the model."""
    store = CaseStore(tmp_path / "cases.sqlite3")
    case_id = add_case(store, "S-1", ["blast", "normal"])
    pieces = [
        Cell(cell_id, (0, 0, 6, 6), (3.0, 3.0), crop=crop(value), blast_probability=0.7,
             model_label="uncertain", origin="split of 1")
        for cell_id, value in ((3, 70), (4, 80))
    ]  # fmt: skip
    store.reshape_cells(case_id, retire=[(0, 1)], add=pieces, reviewer="Dr. A", action="split",
                        note="cell 1 split in two")  # fmt: skip
    store.relabel_cell(case_id, 0, 3, "blast", reviewer="Dr. A")
    store.relabel_cell(case_id, 0, 4, "normal", reviewer="Dr. A")
    store.relabel_cell(case_id, 0, 2, "blast", reviewer="Dr. A")
    store.sign_case(case_id, reviewer="Dr. A")
    table = export_reviewed_cases(store, tmp_path / "reviewed")
    assert sorted((r.path.name, r.label, r.cell_type) for r in table) == [
        (f"{case_id}_f0_c2.png", "blast", "corrected"),
        (f"{case_id}_f0_c3.png", "blast", "redrawn"),
        (f"{case_id}_f0_c4.png", "normal", "redrawn"),
    ]


def test_a_cell_the_model_left_uncertain_is_exported_as_decided_not_corrected(tmp_path):
    """Labelling a cell the model left uncertain is no correction of the model (the report's own
    rule); the export called it one, overstating the model's errors."""
    store = CaseStore(tmp_path / "cases.sqlite3")
    case_id = add_case(store, "S-3", ["uncertain", "normal"])
    store.relabel_cell(case_id, 0, 1, "blast", reviewer="Dr. A")
    store.sign_case(case_id, reviewer="Dr. A")
    table = export_reviewed_cases(store, tmp_path / "reviewed")
    assert [(r.label, r.cell_type) for r in table] == [
        ("blast", "decided"),
        ("normal", "confirmed"),
    ]


def test_two_smears_of_one_patient_are_one_group_named_without_the_patient_id(tmp_path):
    store = CaseStore(tmp_path / "cases.sqlite3")
    for sample in ("HEM-24-0101", "HEM-24-0188", "HEM-24-0200"):
        case_id = add_case(store, sample, ["blast", "normal"])
        if sample != "HEM-24-0200":  # the third names no patient: its sample is its group
            # typed two ways on two cases (MRN1 and mrn1 made two groups): still one patient
            patient_id = "PAT-7" if sample == "HEM-24-0101" else " pat 7"
            store.set_case_details(case_id, reviewer="Dr. A", patient_id=patient_id)
        store.sign_case(case_id, reviewer="Dr. A")
    table = export_reviewed_cases(store, tmp_path / "reviewed")
    groups = {r.subset: r.group for r in table}
    patient = {g for g in groups.values() if g.startswith("patient-")}
    assert len(patient) == 1 and len(set(groups.values())) == 2  # a review found two groups
    (name,) = patient
    manifest = (tmp_path / "reviewed" / "manifest.csv").read_text()
    assert "PAT-7" not in manifest and "HEM-24-0200" not in manifest
    # keyed with the database's own key: a bare hash of "pat7" (of every record number, as
    # one tries them) does not give the pseudonym, another lab's database gives another one,
    # and the same database gives the same one in every export
    assert hashlib.sha256(b"pat7").hexdigest()[:12] not in name
    other = CaseStore(tmp_path / "other.sqlite3")
    assert case_group(store.load_case(case_id), other.pseudonym_key()) != case_group(
        store.load_case(case_id), store.pseudonym_key())  # fmt: skip
    again = export_reviewed_cases(store, tmp_path / "reviewed")
    assert {r.subset: r.group for r in again} == groups


def test_export_uses_the_newest_signed_version_of_a_reopened_case(tmp_path, reviewed):
    store, signed, _ = reviewed
    reopened = store.reopen_case(signed, reviewer="Dr. B")
    store.relabel_cell(reopened, 0, 3, "blast", reviewer="Dr. B")
    out = tmp_path / "reviewed"
    with pytest.raises(EmptyDatasetError):  # v1 is being corrected, v2 not signed yet: neither
        export_reviewed_cases(store, out)
    store.sign_case(add_case(store, "S-9", ["normal", "blast"]), reviewer="Dr. A")  # signed
    being_corrected = export_reviewed_cases(store, out)
    (s9,) = {r.group for r in being_corrected}
    assert being_corrected.notes[0].endswith(
        "Left out 1 signed case(s) reopened and not signed again (their labels are being "
        "corrected).")  # fmt: skip
    store.sign_case(reopened, reviewer="Dr. B")
    table = export_reviewed_cases(store, out)  # replaces the earlier export
    table = [r for r in table if r.group != s9]
    assert [(r.subset, r.path.name[-6:], r.label, r.cell_type) for r in table] == [
        (reopened, "c1.png", "blast", "confirmed"),
        (reopened, "c2.png", "blast", "corrected"),
        (reopened, "c3.png", "blast", "corrected"),
    ]
    on_disk = sorted(p.name for p in (out / "cells").iterdir() if p.name.startswith(reopened))
    assert on_disk == [r.path.name for r in table]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reviewed")]


def test_export_refusals_write_nothing(tmp_path):
    store = CaseStore(tmp_path / "cases.sqlite3")
    add_case(store, "S-3", ["blast", "uncertain"])
    with pytest.raises(
        EmptyDatasetError,
        match=r"No signed case with reviewed blast or normal cells .*0 signed case\(s\) to "
        r"read\. .*review its cells on the Review cells page .* and sign the case on the Case & "
        r"sign-off page",
    ):
        export_reviewed_cases(store, tmp_path / "out")
    signed = add_case(store, "S-4", ["blast", "normal"])
    store.sign_case(signed, reviewer="Dr. A")
    store.reopen_case(signed, reviewer="Dr. B")  # its only signed version is being corrected
    with pytest.raises(
        EmptyDatasetError,
        match=r"0 signed case\(s\) to read \(1 more case\(s\) had a signed version but were "
        r"reopened and are not signed again: sign them to use their cells\)",
    ):
        export_reviewed_cases(store, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    write_text(tmp_path / "mine" / "notes.txt", "my own files")
    with pytest.raises(DatasetError, match=r"mine holds files of another kind.*new folder"):
        export_reviewed_cases(store, tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_allidb2_summary_agrees_with_the_loader(shared_data):
    table, summary = inspect_dataset(shared_data / "all_idb2")
    # ALL-IDB2 repeats five cells of Im093 as new crops (Im256-260; Im257 is Im223 byte for
    # byte): the loader counts each cell once, so none sits in training and test at once.
    loaded = load_dataset(shared_data / "all_idb2")
    assert len(loaded) == 162 and not {"Im256_0.tif", "Im257_0.tif", "Im260_0.tif"} & {
        r.path.name for r in loaded}  # fmt: skip
    expected = summarize(loaded)
    assert isinstance(summary, DatasetSummary) and len(table) == expected["n_cells"] == 162
    assert (summary.n_cells, summary.per_class) == (162, expected["per_class"])
    assert (summary.n_groups, summary.groups_known) == (expected["n_groups"], True)
    assert summary.per_source == expected["per_source"] == {"allidb2": 162}
    frame = summary.group_frame()
    assert dict(zip(frame["group"], frame["total"], strict=True)) == expected["per_group"]
    assert frame["total"].is_monotonic_decreasing
    assert len(summary.notes) == 1 and summary.notes[0].startswith(
        "5 crop(s) show a cell another crop shows (same field, centres within 32 px)"
    )


def test_one_picture_is_used_once_and_a_picture_with_two_labels_is_left_out(tmp_path):
    """A review put one picture, copied under two subjects, in training and validation, and a
    picture filed as blast and as normal in training, without a word."""
    root = make_subjects(tmp_path / "lab", SUBJECTS)
    shutil.copy(root / "blast/P01/a.png", root / "blast/P02/a_copy.png")  # another subject
    (root / "normal/P04").mkdir()
    shutil.copy(root / "blast/P02/c.png", root / "normal/P04/same_cell.png")  # two labels
    table, summary = inspect_datasets([root])
    names = sorted(r.path.name for r in table)
    assert names == ["a.png", "b.png", "d.png", "e.png", "f.png", "g.png"]
    repeated, conflicting = [n for n in summary.notes if "picture" in n]
    assert repeated.startswith("1 image(s) repeated a picture listed before")
    assert conflicting.startswith("2 image(s) are one picture labelled both blast and normal")
    assert "c.png" in conflicting and "same_cell.png" in conflicting
    both = make_subjects(tmp_path / "both", {"blast/P1": ["x.png"]})
    (both / "normal/P2").mkdir(parents=True)
    shutil.copy(both / "blast/P1/x.png", both / "normal/P2/x.png")
    with pytest.raises(EmptyDatasetError, match="filed both as blast and as normal"):
        inspect_datasets([both])


def test_a_source_of_one_class_and_a_rare_class_are_noted(tmp_path):
    """A walkthrough combined a lab's 30 blasts with 1,200 PBC normal cells from another
    instrument and was told nothing: the shortcut behind the confident misses on other labs."""
    both = make_subjects(tmp_path / "lab", SUBJECTS)  # 3 blasts, 4 normal cells
    normals = {f"normal/D{i:02d}": [f"n{i}a.png", f"n{i}b.png"] for i in range(30)}
    only_normal = make_subjects(tmp_path / "donors", normals)
    _, summary = inspect_datasets([both, only_normal])
    assert summary.per_class == {"blast": 3, "normal": 64}
    shortcut, rare = summary.notes[-2:]  # after how each folder was grouped
    assert shortcut.startswith("One class only in donors (60 normal): a model can learn")
    assert "leave-one-source-out protocol" in shortcut
    assert rare.startswith("Blast cells are 3 of 67 (4%)")
    _, alone = inspect_datasets([both])  # one source with both classes: nothing to say
    assert not [n for n in alone.notes if "One class only" in n or "cells are" in n]
