"""Data roots: the app reads typed dataset paths only under ``LEUKEMIA_DATA_ROOTS``.

Small class folders and manifests of tiny real PNGs in tmp folders; real symbolic links. The
core function is tested on every refusal of the issue (``/etc``, ``../``, an absolute path
outside, a link pointing out), and so is the Retrain page (its dataset picker and its "Adapt to
this lab" section), which must show the refusal and inspect nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import log_in, save_picture
from streamlit.testing.v1 import AppTest

from leukemia_core.accounts import User
from leukemia_core.models.folder import set_active_model
from train.__main__ import main as train_cli
from train.compare_settings import CompareSettings
from train.data_roots import (
    ROOTS_ENV_VAR,
    DataRootError,
    NoDataRootsError,
    OutsideDataRootsError,
    data_roots,
    load_under_roots,
    relative_name,
    resolve_under_roots,
    shorten,
)
from train.inspection import inspect_datasets
from train.job_worker import load_job_data
from train.jobs import JobSpec
from train.records import (
    DatasetNotFoundError,
    EmptyDatasetError,
    ManifestError,
    SingleClassError,
    UnreadableFileError,
)

APP = Path(__file__).resolve().parents[1] / "app.py"
ONLY_UNDER = "only folders under the data roots"


def _cells(folder: Path) -> Path:
    """Class folders ``<class>/<subject>/image.png``: 2 subjects x 2 classes, one cell each."""
    for label in ("blast", "normal"):
        for subject in ("P0", "P1"):
            (folder / label / subject).mkdir(parents=True, exist_ok=True)
            colour = (120, 60, 160) if label == "blast" else (200, 160, 180)
            save_picture(folder / label / subject / f"{label}.png", 16, colour)
    return folder


@pytest.fixture
def tree(tmp_path) -> dict[str, Path]:
    """``root/`` (a data root, with ``cells``, ``inner`` linking to ``cells`` and ``out``
    linking outside), a second root ``root2/`` and ``outside/`` (a good dataset, not a root)."""
    root, root2, outside = tmp_path / "root", tmp_path / "root2", tmp_path / "outside"
    _cells(root / "cells")
    _cells(root2 / "lab")
    _cells(outside / "secret")
    (root / "inner").symlink_to(root / "cells")
    (root / "out").symlink_to(outside)
    (root / "etc").symlink_to("/etc")
    (root / "loop").symlink_to(root / "loop")
    return {"root": root, "root2": root2, "outside": outside, "tmp": tmp_path}


# ---- the core function ----------------------------------------------------------------------
def test_roots_come_from_the_variable_and_none_is_the_default(tree, monkeypatch):
    monkeypatch.delenv(ROOTS_ENV_VAR, raising=False)
    assert data_roots() == ()
    monkeypatch.setenv(ROOTS_ENV_VAR, f"{tree['root']}{os.pathsep}{os.pathsep} {tree['root2']} ")
    assert data_roots() == (tree["root"].resolve(), tree["root2"].resolve())
    assert data_roots("") == ()
    with pytest.raises(NoDataRootsError, match=f"switched off.*setting {ROOTS_ENV_VAR}"):
        resolve_under_roots("cells", ())


REFUSED = [
    ("/etc", "'/etc' is outside the data roots"),
    ("/etc/passwd", "is outside the data roots"),
    ("../", "'../' leads out of the data roots"),
    ("..", "leads out of the data roots"),
    ("cells/../../outside/secret", "leads out of the data roots"),
    ("../outside/secret", "leads out of the data roots"),
    ("{outside}", "is outside the data roots"),  # absolute, outside
    ("{tmp}", "is outside the data roots"),  # the roots' parent
    ("{root}/../outside/secret", "is outside the data roots"),
    ("out", "'out' leads outside the data roots through a symbolic link"),
    ("out/secret", "through a symbolic link"),
    ("etc", "through a symbolic link"),
    ("{root}/etc/passwd", "through a symbolic link"),
    ("loop", "a loop of symbolic links"),
    ("cells\x00/x", "not a valid path"),
]


@pytest.mark.parametrize("typed, message", REFUSED)
def test_paths_outside_the_roots_are_refused_with_a_clear_message(typed, message, tree):
    typed = typed.format(**{k: str(v) for k, v in tree.items()})
    with pytest.raises(OutsideDataRootsError, match=message) as caught:
        resolve_under_roots(typed, [tree["root"], tree["root2"]])
    assert ONLY_UNDER in str(caught.value) and "LEUKEMIA_DATA_ROOTS" in str(caught.value)
    assert str(tree["outside"]) not in str(caught.value).replace(typed, "")  # no link target


def test_paths_under_a_root_resolve_to_their_real_folder(tree):
    root, root2 = tree["root"].resolve(), tree["root2"].resolve()
    roots = [tree["root"], tree["root2"]]
    assert resolve_under_roots("cells", roots) == root / "cells"
    assert resolve_under_roots(" cells/blast/ ", roots) == root / "cells" / "blast"
    assert resolve_under_roots(str(tree["root"] / "cells"), roots) == root / "cells"
    assert resolve_under_roots("inner", roots) == root / "cells"  # a link staying inside
    assert resolve_under_roots("lab", roots) == root2 / "lab"  # found in the second root
    assert resolve_under_roots("cells/../cells", roots) == root / "cells"
    assert resolve_under_roots(".", roots) == root
    assert resolve_under_roots("missing", roots) == root / "missing"  # the loader says so
    with pytest.raises(DataRootError, match="Type the path"):
        resolve_under_roots("  ", roots)


def test_names_in_messages_are_relative_to_their_root(tree):
    roots = [tree["root"]]
    root = str(tree["root"].resolve())
    assert relative_name(f"{root}/cells/blast/P0/blast.png", roots) == "cells/blast/P0/blast.png"
    assert relative_name(root, roots) == "."
    assert shorten(f"Folder {root}/missing does not exist; {root} holds none", roots) == (
        "Folder missing does not exist; . holds none"
    )
    others = f"{root}.previous and {root}x stay"  # other folders
    assert shorten(others, roots) == others


def test_a_link_inside_a_dataset_pointing_out_is_refused_before_any_image_is_read(tree):
    (tree["root"] / "cells" / "blast" / "P0" / "stolen.png").symlink_to(
        tree["outside"] / "secret" / "blast" / "P0" / "blast.png"
    )
    with pytest.raises(OutsideDataRootsError, match=r"1 image\(s\) of cells lead outside") as e:
        inspect_datasets(["cells"], roots=[tree["root"]])
    assert "cells/blast/P0/stolen.png" in str(e.value) and str(tree["tmp"]) not in str(e.value)


def test_a_manifest_naming_files_outside_is_refused_without_saying_which_exist(tree):
    manifest = tree["root"] / "manifest.csv"
    secret = tree["outside"] / "secret" / "blast" / "P0" / "blast.png"
    manifest.write_text(
        "path,label,group\n"
        "cells/blast/P0/blast.png,blast,P0\n"
        f"{secret},blast,P9\n"
        "/nonexistent/x.png,normal,P9\n"
        "../outside/secret/normal/P0/normal.png,normal,P9\n"
    )
    with pytest.raises(OutsideDataRootsError, match=r"names 3 file\(s\) outside") as e:
        inspect_datasets(["manifest.csv"], roots=[tree["root"]])
    assert "line 3" in str(e.value) and "line 4" in str(e.value) and "line 5" in str(e.value)
    assert "not found" not in str(e.value)  # the same refusal whether a file exists or not


def test_a_manifest_cut_short_with_nul_bytes_is_refused_in_words(tree):
    """A zero-filled tail (a write cut short) raised 'embedded null byte' on the Retrain page."""
    manifest = tree["root"] / "manifest.csv"
    manifest.write_bytes(b"path,label,group\ncells/blast/P0/blast.png,blast,P0\n" + b"\0" * 40)
    with pytest.raises(ManifestError, match=r"NUL bytes on line\(s\) 3 .*write the manifest again"):
        inspect_datasets(["manifest.csv"], roots=[tree["root"]])


def test_a_dataset_under_a_root_is_read_and_named_relative_to_it(tree):
    table, summary = inspect_datasets(["cells"], roots=[tree["root"]])
    assert summary.n_cells == 4 and summary.per_class == {"blast": 2, "normal": 2}
    assert summary.location == "cells" and summary.n_groups == 2
    table, fmt = load_under_roots("lab", [tree["root"], tree["root2"]], require_both_classes=False)
    assert fmt == "folders" and len(table) == 4


def test_loader_messages_name_paths_relative_to_the_root(tree):
    with pytest.raises(DatasetNotFoundError, match="Dataset folder missing does not exist") as e:
        inspect_datasets(["missing"], roots=[tree["root"]])
    assert str(tree["tmp"]) not in str(e.value)
    (tree["root"] / "cells" / "blast" / "P0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableFileError, match="cannot be decoded") as e:
        inspect_datasets(["cells"], roots=[tree["root"]])
    assert "cells/blast/P0/broken.png" in str(e.value) and str(tree["tmp"]) not in str(e.value)
    assert "not a picture file" in str(e.value) and "Error:" not in str(e.value)  # no class names
    table, summary = inspect_datasets(["cells"], roots=[tree["root"]], skip_unreadable=True)
    assert summary.n_cells == 4 and all(r.path.name != "broken.png" for r in table)
    (note,) = [n for n in summary.notes if "cannot be decoded and were left out" in n]
    assert note.startswith("1 image(s)") and "cells/blast/P0/broken.png" in note
    assert str(tree["tmp"]) not in note  # named relative to the root, as every message
    for picture in (tree["root"] / "cells" / "normal").rglob("normal.png"):
        picture.write_bytes(b"\x89PNG\r\n")  # every normal cell damaged: one class is left
    with pytest.raises(
        SingleClassError, match=r"only blast cells \(2\) and 3 unreadable image\(s\), left out;"
    ):
        inspect_datasets(["cells"], roots=[tree["root"]], skip_unreadable=True)
    for picture in (tree["root"] / "cells").rglob("*.png"):
        picture.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # LFS pointers
    with pytest.raises(EmptyDatasetError, match="None of the 5 images of cells can be decoded"):
        inspect_datasets(["cells"], roots=[tree["root"]], skip_unreadable=True)


def test_the_command_line_is_not_restricted(tree, monkeypatch, capsys):
    monkeypatch.setenv(ROOTS_ENV_VAR, str(tree["root"]))
    _, summary = inspect_datasets([tree["outside"] / "secret"])  # no roots: the shell user's
    assert summary.n_cells == 4
    assert train_cli(["inspect", "--data", str(tree["outside"] / "secret")]) == 0
    assert json.loads(capsys.readouterr().out)["n_cells"] == 4


# ---- the Retrain page -----------------------------------------------------------------------
@pytest.fixture
def app_env(tree, tiny_models_dir, monkeypatch, apptest_navigation) -> dict[str, Path]:
    """The app on a tmp registry, runs folder and case database; ``root`` as the data root."""
    models = tree["tmp"] / "models"
    shutil.copytree(tiny_models_dir, models)
    set_active_model("tiny", models, user=User.shell())
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(models))
    monkeypatch.setenv("LEUKEMIA_RUNS_DIR", str(tree["tmp"] / "runs"))
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(tree["tmp"] / "cases.sqlite3"))
    monkeypatch.setenv(ROOTS_ENV_VAR, str(tree["root"]))
    return tree


def _page() -> AppTest:
    at = log_in(AppTest.from_file(str(APP), default_timeout=120), "Dr. M", ("model_admin",))
    at.run()
    at.switch_page("pages/retrain.py").run()
    assert not at.exception, at.exception
    return at


def _check(at: AppTest, typed: str) -> AppTest:
    at.text_area(key="data_paths").input(typed).run()
    at.button(key="inspect").click().run()
    assert not at.exception, at.exception
    return at


def _shown(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.error, *at.info, *at.caption, *at.markdown])


PAGE_REFUSED = [
    ("/etc", "'/etc' is outside the data roots"),
    ("../", "'../' leads out of the data roots"),
    ("{outside}/secret", "is outside the data roots"),
    ("out/secret", "leads outside the data roots through a symbolic link"),
]


@pytest.mark.slow
def test_the_page_refuses_paths_outside_the_roots_and_inspects_nothing(app_env):
    at = _page()
    for typed, message in PAGE_REFUSED:
        typed = typed.format(**{k: str(v) for k, v in app_env.items()})
        _check(at, f"cells\n{typed}")  # one bad line refuses the whole pick
        errors = [e.value for e in at.error]
        assert any(message in e and ONLY_UNDER in e for e in errors), (typed, errors)
        assert not at.metric and "retrain_dataset" not in at.session_state
        assert "Check a dataset first" in " ".join(i.value for i in at.info)
        assert str(app_env["outside"]) not in " ".join(errors).replace(typed, "")
    _check(at, "cells")  # a folder under the root, named relative to it
    refusals = [e.value for e in at.error if "too few for a grouped split" not in e.value]
    assert not refusals, refusals  # read (its 2 subjects are too few to train on, said apart)
    assert {m.label: m.value for m in at.metric}["Cells"] == "4"
    assert at.session_state["retrain_dataset"]["locations"] == [
        str(app_env["root"].resolve() / "cells")  # the job's worker reads what was checked
    ]
    assert str(app_env["tmp"]) not in _shown(at)
    _check(at, "missing")
    assert any("Dataset folder missing does not exist" in e.value for e in at.error)
    assert str(app_env["tmp"]) not in _shown(at)


@pytest.mark.slow
def test_the_page_leaves_out_unreadable_images_when_asked_and_the_job_does_too(app_env):
    (app_env["root"] / "cells" / "normal" / "P1" / "cut.png").write_bytes(b"\x89PNG\r\n")
    at = _check(_page(), "cells")
    assert any("cannot be decoded" in e.value and "Leave out images" in e.value for e in at.error)
    assert "retrain_dataset" not in at.session_state
    at.checkbox(key="skip_unreadable").check().run()
    at = _check(at, "cells")
    assert {m.label: m.value for m in at.metric}["Cells"] == "4"
    assert "cells/normal/P1/cut.png" in _shown(at)  # the summary names what was left out
    picked = at.session_state["retrain_dataset"]
    assert picked["options"] == {"allow_ungrouped": False, "skip_unreadable": True}
    spec = JobSpec(tuple(picked["locations"]), CompareSettings.from_preset("quick_cpu"),
                   **picked["options"])  # fmt: skip
    assert JobSpec.from_dict(spec.to_dict()) == spec and "--skip-unreadable" in spec.command("x")
    records, _, notes = load_job_data(spec)  # what the job's worker trains and tests on
    assert len(records) == 4 and all(r.path.name != "cut.png" for r in records)
    assert any("cut.png" in note for note in notes)  # carried to the promotion, as said here


@pytest.mark.slow
def test_without_roots_the_page_offers_no_server_folder_and_says_how(app_env, monkeypatch):
    monkeypatch.delenv(ROOTS_ENV_VAR)
    at = _page()
    assert at.radio(key="data_source").value == "Upload a zip"  # what can be used, first
    at.radio(key="data_source").set_value("Folder on this server").run()
    assert "data_paths" not in [t.key for t in at.text_area]
    assert "inspect" not in [b.key for b in at.button]
    assert any(f"setting {ROOTS_ENV_VAR}" in i.value for i in at.info), [i.value for i in at.info]
    at.radio(key="adapt_source").set_value("Folder on this server").run()
    assert "adapt_path" not in [t.key for t in at.text_input]
    at.button(key="adapt_count").click().run()
    assert any("switched off" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.slow
def test_the_adapt_section_reads_only_under_the_roots(app_env):
    at = _page()
    at.radio(key="adapt_source").set_value("Folder on this server").run()
    for typed, message in PAGE_REFUSED:
        typed = typed.format(**{k: str(v) for k, v in app_env.items()})
        at.text_input(key="adapt_path").input(typed).run()
        at.button(key="adapt_count").click().run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert any(message in e for e in errors), (typed, errors)
        assert "adapt_cells" not in at.session_state and not at.metric
    at.text_input(key="adapt_path").input("cells").run()
    at.button(key="adapt_count").click().run()
    assert {m.label: m.value for m in at.metric}["Cells"] == "4"
    assert at.session_state["adapt_cells"]["words"] == "cells"
