"""Tests of train.data: every layout on tiny truthful folders, every refusal, and the real sets.

Fake layouts are written to ``tmp_path`` as small real images (BMP, TIFF, JPEG, PNG) so that
counts, labels and groups have a known answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import save_picture

from train import data
from train.data import (
    CellTable,
    DatasetError,
    DatasetNotFoundError,
    EmptyDatasetError,
    ManifestError,
    MissingGroupError,
    SingleClassError,
    UnknownClassFolderError,
    UnreadableFileError,
    default_label,
    detect_format,
    load_allidb2,
    load_class_folders,
    load_cnmc,
    load_dataset,
    load_manifest,
    summarize,
)


def write_image(path: Path, color: tuple[int, int, int] = (200, 100, 150)) -> Path:
    """A real 8x8 RGB image in the format given by the suffix, a picture of its own."""
    return save_picture(path, 8, color)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_cnmc(root: Path) -> Path:
    """3 folds, 2 ALL subjects + 2 healthy, a labelled prelim test and an unlabelled final test."""
    train = root / "training_data"
    for name in [
        "fold_0/all/UID_1_1_1_all.bmp",
        "fold_0/all/UID_1_1_2_all.bmp",
        "fold_0/hem/UID_H1_1_1_hem.bmp",
        "fold_1/all/UID_2_3_1_all.bmp",
        "fold_1/hem/UID_H2_1_1_hem.bmp",
        "fold_2/hem/UID_H2_2_1_hem.bmp",
    ]:
        write_image(train / name)
    prelim = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    for name in ["1.bmp", "2.bmp", "3.bmp"]:
        write_image(prelim / name)
    write_text(
        root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv",
        "Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\n"
        "UID_H24_1_1_hem.bmp,2.bmp,0\nUID_57_30_1_all.bmp,3.bmp,1\n",
    )
    write_image(root / "testing_data" / "C-NMC_test_final_phase_data" / "1.bmp")
    return root


def make_allidb2(root: Path, fields: bool = True) -> Path:
    for name in ["Im001_1.tif", "Im002_1.tif", "Im003_0.tif", "Im004_0.tif"]:
        write_image(root / "images" / name)
    write_image(root / "masks" / "Im001_1.tif", (0, 255, 255))
    if fields:  # Im004_0 is missing from the CSV on purpose
        write_text(
            root / "source_fields.csv",
            "crop,idb1_field,x,y,match_score\n"
            "Im001_1.tif,Im010_1.jpg,10,10,0.99\nIm002_1.tif,Im010_1.jpg,50,50,0.98\n"
            "Im003_0.tif,Im090_0.jpg,20,20,0.99\n",
        )
    return root


def make_folders(root: Path, names=("lymphoblast", "lymphocyte", "Neutrophils")) -> Path:
    for i, name in enumerate(names):
        write_image(root / name / f"a{i}.jpg")
        write_image(root / name / f"b{i}.png")
    return root


def make_manifest(root: Path, rows: str) -> Path:
    write_image(root / "cells" / "x.bmp")
    write_image(root / "cells" / "y.png")
    return write_text(root / "manifest.csv", "path,label,group,source\n" + rows)


# ----------------------------------------------------------------------------- C-NMC
@pytest.mark.parametrize("where", ["", "training_data", "training_data/fold_0"])
def test_cnmc_accepts_root_training_data_or_one_fold(tmp_path, where):
    table = load_cnmc(make_cnmc(tmp_path) / where)
    train = [r for r in table if r.subset and r.subset.startswith("fold")]
    expected = 6 if where != "training_data/fold_0" else 3
    assert len(train) == expected
    fold0 = {r.path.name: (r.label, r.group, r.source) for r in train if r.subset == "fold_0"}
    assert fold0 == {
        "UID_1_1_1_all.bmp": ("blast", "1", "cnmc"),
        "UID_1_1_2_all.bmp": ("blast", "1", "cnmc"),
        "UID_H1_1_1_hem.bmp": ("normal", "H1", "cnmc"),
    }


def test_cnmc_reads_labelled_prelim_test_and_skips_final_with_note(tmp_path):
    table = load_cnmc(make_cnmc(tmp_path))
    prelim = sorted(
        (r.path.name, r.label, r.group) for r in table if r.subset == "C-NMC_test_prelim_phase_data"
    )
    assert prelim == [
        ("1.bmp", "blast", "57"),
        ("2.bmp", "normal", "H24"),
        ("3.bmp", "blast", "57"),
    ]
    assert len(table) == 9  # final-phase 1.bmp shares a name with a prelim image: not labelled
    assert any("C-NMC_test_final_phase_data" in n and "unlabelled" in n for n in table.notes)


def test_cnmc_subjects_and_summary(tmp_path):
    summary = summarize(load_cnmc(make_cnmc(tmp_path) / "training_data"))
    assert summary["per_class"] == {"blast": 3, "normal": 3}
    assert summary["per_group"] == {"1": 2, "H1": 1, "2": 1, "H2": 2}
    assert summary["groups_by_class"] == {"all_blast": 2, "all_normal": 2, "mixed": 0}
    assert summary["per_source"] == {"cnmc": 6} and summary["n_groups"] == 4


# ----------------------------------------------------------------------------- ALL-IDB2
def test_allidb2_groups_by_source_field(tmp_path):
    table = load_allidb2(make_allidb2(tmp_path))
    got = {r.path.name: (r.label, r.group) for r in table}
    assert got == {
        "Im001_1.tif": ("blast", "Im010_1.jpg"),
        "Im002_1.tif": ("blast", "Im010_1.jpg"),
        "Im003_0.tif": ("normal", "Im090_0.jpg"),
        "Im004_0.tif": ("normal", "Im004_0.tif"),
    }
    assert len(table.notes) == 1 and "Im004_0.tif" in table.notes[0]
    assert not table.groups_known  # Im004_0 has no field: it could share one with a crop


def test_allidb2_without_fields_groups_by_crop_and_says_so(tmp_path):
    table = load_allidb2(make_allidb2(tmp_path, fields=False))
    assert [r.group for r in table] == [r.path.name for r in table]
    assert "each crop is its own group" in table.notes[0] and not table.groups_known


# ----------------------------------------------------------------------------- class folders
@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("lymphoblast", "blast"),
        ("ALL", "blast"),
        ("leukemic_cells", "blast"),
        ("myeloblasts", "blast"),
        ("erythroblast", "normal"),
        ("Erythroblasts", "normal"),
        ("neutrophils", "normal"),
        ("ig", "normal"),
        ("hem", "normal"),
        ("normal_lymphocyte", "normal"),
        ("small_cells", None),
        ("Early", None),
        ("Benign", None),
        ("blast_vs_normal", None),
        # a negation, an erythroid "blast" or any white cell: the lab is asked (a review found
        # all of these labelled blast)
        ("non_blast", None),
        ("nonblast", None),
        ("no_blasts", None),
        ("non_ALL", None),
        ("ALL_negative", None),
        ("normoblasts", "normal"),
        ("megaloblast", None),
        ("leukocytes", None),
        ("B-ALL", "blast"),
    ],
)
def test_default_label(name, label):
    assert default_label(name) == label


def test_class_folders_labels_groups_and_cell_types(tmp_path):
    table = load_class_folders(make_folders(tmp_path / "pbcish"))
    frame = table.to_frame()
    assert list(frame.columns) == ["path", "label", "group", "source", "subset", "cell_type"]
    assert frame.groupby("cell_type")["label"].agg(set).to_dict() == {
        "lymphoblast": {"blast"},
        "lymphocyte": {"normal"},
        "Neutrophils": {"normal"},
    }
    assert frame["group"].tolist() == [
        "Neutrophils/a2.jpg",
        "Neutrophils/b2.png",
        "lymphoblast/a0.jpg",
        "lymphoblast/b0.png",
        "lymphocyte/a1.jpg",
        "lymphocyte/b1.png",
    ]
    assert set(frame["source"]) == {"pbcish"} and "each file is its own group" in table.notes[1]
    assert not table.groups_known


def test_class_folders_group_by_subject_subfolder_across_classes(tmp_path):
    for name in ["blast/P01/a.png", "blast/P02/day2/b.png", "normal/P01/c.png", "hem/P03/d.bmp"]:
        write_image(tmp_path / "lab" / name)
    table = load_class_folders(tmp_path / "lab")
    assert [(r.path.name, r.label, r.group, r.cell_type) for r in table] == [
        ("a.png", "blast", "P01", "blast"),
        ("b.png", "blast", "P02", "blast"),
        ("d.bmp", "normal", "P03", "hem"),
        ("c.png", "normal", "P01", "normal"),
    ]
    assert table.groups_known and table.notes == (
        # which folder became which label: a review found non_blast/ read as blast, unsaid
        "lab: class folders as labels (read from the folder names: check them): blast: blast; "
        "normal: hem, normal.",
        "lab: grouped by the subfolders of the class folders (<class>/<subject>/): 3 subject(s); "
        "a subject's cells stay on one side of a split.",
    )


def test_class_folders_with_some_loose_files_say_groups_are_unknown(tmp_path):
    write_image(tmp_path / "blast" / "P01" / "a.png")
    write_image(tmp_path / "normal" / "loose.png")
    table = load_class_folders(tmp_path)
    assert [r.group for r in table] == ["P01", "normal/loose.png"]
    assert not table.groups_known
    assert "1 of 2 file(s) lie directly in a class folder" in table.notes[2]


def test_class_folders_label_map_overrides_and_leaves_out(tmp_path):
    root = make_folders(tmp_path, ("Benign", "Early", "Pre"))
    table = load_class_folders(root, {"Benign": "normal", "Early": "blast", "Pre": None})
    assert summarize(table)["per_cell_type"] == {"Benign": 2, "Early": 2}
    assert summarize(table)["per_class"] == {"blast": 2, "normal": 2}
    assert any("Pre" in n for n in table.notes)


# ----------------------------------------------------------------------------- manifests
def test_manifest_resolves_relative_and_absolute_paths(tmp_path):
    absolute = write_image(tmp_path / "elsewhere" / "z.jpg")
    csv_path = make_manifest(
        tmp_path / "m",
        f"cells/x.bmp,blast,p1,\ncells/y.png, Normal ,p1,lab\n{absolute},normal,p2,lab\n",
    )
    table = load_manifest(csv_path)
    assert [(r.path, r.label, r.group, r.source) for r in table] == [
        (tmp_path / "m" / "cells" / "x.bmp", "blast", "p1", "manifest"),
        (tmp_path / "m" / "cells" / "y.png", "normal", "p1", "lab"),
        (absolute, "normal", "p2", "lab"),
    ]
    assert detect_format(csv_path) == "manifest"
    assert len(load_dataset(csv_path)) == 3


# ----------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("builder", "where", "expected"),
    [
        (make_cnmc, "", "cnmc"),
        (make_cnmc, "training_data", "cnmc"),
        (make_cnmc, "training_data/fold_1", "cnmc"),
        (make_allidb2, "", "allidb2"),
        (make_allidb2, "images", "allidb2"),
        (make_folders, "", "folders"),
    ],
)
def test_detect_format(tmp_path, builder, where, expected):
    assert detect_format(builder(tmp_path) / where) == expected


def test_folders_named_all_and_hem_without_uid_names_are_class_folders(tmp_path):
    root = make_folders(tmp_path, ("all", "hem"))
    assert detect_format(root) == "folders"
    assert summarize(load_dataset(root))["per_class"] == {"blast": 2, "normal": 2}


def test_load_dataset_dispatches_and_verifies(tmp_path):
    table = load_dataset(make_cnmc(tmp_path), verify=True)
    assert len(table) == 9 and table.notes
    both = CellTable.concat(table, load_class_folders(make_folders(tmp_path / "f")))
    assert len(both) == 15 and len(both.notes) == 3
    assert table.groups_known and not both.groups_known


# ----------------------------------------------------------------------------- refusals
def _no_uid(root: Path) -> Path:
    make_cnmc(root)
    write_image(root / "training_data" / "fold_0" / "all" / "UID_5_1_1_all.bmp")
    write_image(root / "training_data" / "fold_0" / "all" / "cell_17.bmp")
    return root


def _mismatch(root: Path) -> Path:
    write_image(root / "training_data" / "fold_0" / "all" / "UID_5_1_1_hem.bmp")
    return root


def _bad_idb2_name(root: Path) -> Path:
    make_allidb2(root)
    write_image(root / "images" / "Im005.tif")
    return root


def _images_loose(root: Path) -> Path:
    write_image(root / "a.jpg")
    return root


def _corrupt(root: Path) -> Path:
    make_folders(root, ("blast", "normal"))
    (root / "blast" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _manifest(rows: str, header: str = "path,label,group"):
    def build(root: Path) -> Path:
        write_image(root / "x.bmp")
        return write_text(root / "m.csv", f"{header}\n{rows}")

    return build


def _empty(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    return root


def _allidb1(root: Path) -> Path:
    write_image(root / "images" / "Im001_1.jpg")
    write_text(root / "xyc" / "Im001_1.xyc", "10\t20\n")
    return root


def _notes(root: Path) -> Path:
    """A folder holding only a text file: not empty, but no layout either."""
    _empty(root)
    (root / "README.txt").write_text("cells to come")
    return root


def _missing(root: Path) -> Path:
    return root / "nowhere"


ERRORS = [
    (_missing, load_dataset, DatasetNotFoundError, r"nowhere does not exist"),
    (_missing, load_cnmc, DatasetNotFoundError, r"does not exist; check the path"),
    (lambda r: write_image(r / "a.bmp"), load_allidb2, DatasetNotFoundError, r"is a file"),
    (_empty, load_dataset, EmptyDatasetError, r"is empty: copy the labelled cells into it"),
    (
        lambda r: _empty(r) / ".." / _notes(r),
        load_dataset,
        EmptyDatasetError,
        r"No C-NMC, ALL-IDB2 or class-folder layout",
    ),
    (_empty, load_cnmc, EmptyDatasetError, r"expected training_data/fold_<n>"),
    (_empty, load_allidb2, EmptyDatasetError, r"No ALL-IDB2 crops"),
    (_empty, load_class_folders, EmptyDatasetError, r"No class subfolders with images"),
    (_images_loose, load_class_folders, EmptyDatasetError, r"lie directly in it"),
    (
        lambda r: make_folders(r, ("blast/Patient_01", "blast/Patient_02")) / "blast",
        load_dataset,
        EmptyDatasetError,
        r"blast looks like one class folder \(it holds blast cells\), and its "
        r"subfolders \(Patient_01, Patient_02\) look like subjects: pick the folder above it",
    ),
    (_images_loose, detect_format, EmptyDatasetError, r"lie directly in it"),
    (
        lambda r: make_folders(r, ("lymphocyte", "ig")),
        load_dataset,
        SingleClassError,
        r"only normal cells \(4\); training and comparing need blast and normal cells.*--data",
    ),
    (
        _corrupt,
        lambda r: load_dataset(r, verify=True),
        UnreadableFileError,
        r"1 image\(s\) cannot be decoded: .*broken\.png",
    ),
    (_no_uid, load_cnmc, MissingGroupError, r"1 file\(s\).*subject is unknown: .*cell_17\.bmp"),
    (_mismatch, load_cnmc, DatasetError, r"disagree on the class.*UID_5_1_1_hem\.bmp"),
    (_bad_idb2_name, load_allidb2, DatasetError, r"do not end in _0 or _1.*Im005\.tif"),
    (
        lambda r: make_folders(r, ("Benign", "Early")),
        load_class_folders,
        UnknownClassFolderError,
        r"folder\(s\) Benign, Early .*Name each class folder .*CSV manifest",
    ),
    (
        lambda r: make_folders(r, ("Benign", "Early")),
        lambda r: load_class_folders(r, {"Benign": "normal", "Erly": "blast"}),
        DatasetError,
        r"'Erly': 'blast'.*Benign, Early",
    ),
    (
        make_folders,
        lambda r: load_class_folders(r, {"lymphocyte": "healthy"}),
        DatasetError,
        r"no label \('blast', 'normal' or None\)",
    ),
    (
        make_cnmc,
        lambda r: load_dataset(r, "cnmc", label_map={"all": "blast"}),
        DatasetError,
        r"label_map applies to class folders only",
    ),
    (make_cnmc, lambda r: load_dataset(r, "imagenet"), DatasetError, r"Unknown dataset format"),
    (make_cnmc, lambda r: load_dataset(r, "manifest"), DatasetNotFoundError, r"not a CSV file"),
    (_allidb1, detect_format, DatasetError, r"looks like ALL-IDB1"),
    (
        _manifest("x.bmp,blast,p1", "path,label"),
        load_manifest,
        ManifestError,
        r"lacks column\(s\) group \(found: path, label\)",
    ),
    (_manifest(""), load_manifest, EmptyDatasetError, r"header but no rows"),
    (
        _manifest("x.bmp,blast,p1\nx.bmp,ALL,p1\nx.bmp,1,p2\n"),
        load_manifest,
        ManifestError,
        r"label not blast/normal: line 3 \('ALL'\), line 4 \('1'\)",
    ),
    (
        _manifest("x.bmp,blast,p1\ngone.bmp,normal,p1\n,normal,p1\n"),
        load_manifest,
        ManifestError,
        r"file not found: line 3 \('gone\.bmp'\), line 4 \(''\)",
    ),
    (
        _manifest("x.bmp,blast,p1\nx.bmp,normal,\n"),
        load_manifest,
        MissingGroupError,
        r"without a group in .*m\.csv: line 3",
    ),
    (_manifest("gone.bmp,normal,\n"), load_manifest, ManifestError, r"file not found.*no group"),
    (
        lambda r: r / "absent.csv",
        load_manifest,
        DatasetNotFoundError,
        r"absent\.csv does not exist",
    ),
]


@pytest.mark.parametrize(("build", "call", "error", "match"), ERRORS)
def test_refusals(tmp_path, build, call, error, match):
    target = build(tmp_path)
    with pytest.raises(error, match=match):
        call(target)


def test_errors_are_typed_core_errors():
    from leukemia_core.errors import LeukemiaCoreError

    assert issubclass(data.DatasetError, LeukemiaCoreError)
    assert issubclass(data.DatasetError, ValueError)
    with pytest.raises(DatasetError, match="not one of"):
        data.LabelledCrop(Path("a.bmp"), "Blast", "g", "x")
    with pytest.raises(MissingGroupError, match="empty group"):
        data.LabelledCrop(Path("a.bmp"), "blast", " ", "x")


# ----------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_cnmc(shared_data):
    table = load_dataset(shared_data / "cnmc", verify=True)
    summary = summarize(table)
    assert detect_format(shared_data / "cnmc") == "cnmc"
    assert summary["n_cells"] == 12 and summary["per_class"] == {"blast": 6, "normal": 6}
    assert sorted(summary["per_group"]) == ["3", "4", "5", "H11", "H6", "H7"]
    assert {r.subset for r in table} == {"fold_0"}


@pytest.mark.data
def test_real_allidb2(shared_data):
    table = load_dataset(shared_data / "all_idb2")
    summary = summarize(table)
    assert detect_format(shared_data / "all_idb2") == "allidb2"
    # five cells of field Im093 are repeated as new crops (Im256-260): each counted once
    (note,) = table.notes
    assert note.startswith("5 crop(s) show a cell another crop shows") and "Im260_0.tif" in note
    assert summary["n_cells"] == 162 and summary["per_class"] == {"blast": 73, "normal": 89}
    assert summary["n_groups"] == 63 and summary["groups_by_class"]["mixed"] == 0
    assert summary["per_group"]["Im093_0.jpg"] == 6 and table.groups_known


@pytest.mark.data
def test_real_pbc_folders(shared_data):
    assert detect_format(shared_data / "pbc") == "folders"
    table = load_dataset(shared_data / "pbc", require_both_classes=False)
    summary = summarize(table)
    assert summary["per_class"] == {"blast": 0, "normal": 1200}
    assert summary["n_groups"] == 1200 and set(summary["per_cell_type"].values()) == {150}
    with pytest.raises(SingleClassError, match="only normal cells \\(1200\\)"):
        load_dataset(shared_data / "pbc")


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("all_idb1", DatasetError, "looks like ALL-IDB1"),
        ("aria", UnknownClassFolderError, "Benign, Early, Pre, Pro"),
    ],
)
def test_real_sets_that_need_help(shared_data, name, error, match):
    with pytest.raises(error, match=match):
        load_dataset(shared_data / name)
