"""Shared fixtures: the real datasets next to the repository, and the test markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.pages_manager import PagesManager

_MARKERS = {
    "data": "needs the real datasets in ../shared/data (or $LEUKEMIA_SHARED_DATA)",
    "slow": "takes more than a few seconds",
    "browser": "drives the app in a real browser",
}


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers these too; add only the ones it does not, to avoid duplicates.
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, help_text in _MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {help_text}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (see its README.md); skips the test where it is absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("LEUKEMIA_SHARED_DATA", default))
    if not path.is_dir():
        pytest.skip(
            f"needs ../shared/data (real datasets); absent in a fresh clone (looked in {path})"
        )
    return path


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder holding ``tiny``: a real (untrained, random) 32-px plain CNN model folder.

    Its predictions are whatever the network computes: never fixed numbers.
    """
    import keras

    from leukemia_core.models import build_classifier
    from leukemia_core.models.writing import save_model_folder

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("models")
    model = build_classifier("simple_cnn", input_size=32, weights=None)
    config = {
        "architecture": "simple_cnn",
        "input_size": 32,
        "preprocessing": "unit",
        "class_names": ["blast", "normal"],
        "calibration": {"temperature": 1.0, "threshold": 0.5, "uncertain_low": 0.45,
                        "uncertain_high": 0.55},
        "gradcam_layer": "block4_relu",
        "training": {"data": "none: random weights, for tests"},
    }  # fmt: skip
    save_model_folder(model, "tiny", config, metrics={}, card="# tiny\n", root=root)
    return root


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """The bytes each download button offers, by file name."""
    offered: dict[str, bytes] = {}
    original = MediaFileManager.add

    def add(self, path_or_data, mimetype, coordinates, file_name=None, *args, **kwargs):
        if file_name:
            offered[file_name] = path_or_data
        return original(self, path_or_data, mimetype, coordinates, file_name, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", add)
    return offered


def synthetic_cell_crops(seeds, stain: str = "wright") -> list[list]:
    """Crops of the whole white cells of synthetic smears (one list per smear), at the demo
    smear's scale."""
    from leukemia_core.cropping import crop_cells
    from leukemia_core.segmentation import segment_wbc
    from leukemia_core.synthetic import make_smear

    out = []
    for seed in seeds:
        image = make_smear(480, 640, n_wbc=5, n_rbc=120, red_cell_diameter_px=34.0, seed=seed,
                           stain=stain).image  # fmt: skip
        out.append([c.crop for c in crop_cells(image, segment_wbc(image)) if not c.touches_border])
    return out


@pytest.fixture(scope="session")
def ood_models_dir(tiny_models_dir, tmp_path_factory) -> Path:
    """A models folder holding ``tiny-ood``: the tiny model with a domain reference fitted on
    Wright-stained synthetic smears (10 for training, 8 validation fields for the limit)."""
    import shutil

    from leukemia_core.classify import Classifier
    from leukemia_core.domain import DomainReference, stain_statistics
    from leukemia_core.models.folder import load_model
    from leukemia_core.models.writing import write_domain_reference

    root = tmp_path_factory.mktemp("ood_models")
    shutil.copytree(tiny_models_dir / "tiny", root / "tiny-ood")
    classifier = Classifier(load_model("tiny-ood", root))
    train = [c for crops in synthetic_cell_crops(range(100, 110)) for c in crops]
    fields = synthetic_cell_crops(range(200, 208))
    val = [c for crops in fields for c in crops]
    groups = [str(i) for i, crops in enumerate(fields) for _ in crops]
    reference = DomainReference.fit(
        classifier.outputs(train).features, stain_statistics(train),
        val_features=classifier.outputs(val).features, val_stain=stain_statistics(val),
        val_groups=groups, n_components=8,
    )  # fmt: skip
    write_domain_reference("tiny-ood", reference, root=root, data="synthetic Wright smears")
    return root


@pytest.fixture
def apptest_navigation(monkeypatch):
    """Make AppTest run ``app.py`` (and its ``st.navigation``) on every run, as the server does.

    Streamlit 1.67's AppTest resets ``PagesManager.uses_pages_directory`` before each run and
    then sets it again because a ``pages/`` folder exists, so from the second run on it runs the
    page file alone (legacy multipage mode) and the sidebar and navigation vanish. ``streamlit
    run`` sets the flag to False for good at the first ``st.navigation`` call.
    """
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(autouse=True, scope="session")
def _user_files_under_tmp(tmp_path_factory):
    """Nothing a test does touches the user's files: the case database (model changes record
    who made them; tests that need their own set ``LEUKEMIA_CASE_DB`` again) and the ONNX
    cache (graphs converted for the tests' random models). The app's background model load is
    off: each test names the models it loads (tests/test_model_warm_up.py tests the load)."""
    with pytest.MonkeyPatch.context() as patch:  # restores all when the session ends
        patch.setenv("LEUKEMIA_CASE_DB", str(tmp_path_factory.mktemp("casedb") / "cases.sqlite3"))
        patch.setenv("LEUKEMIA_CACHE_DIR", str(tmp_path_factory.mktemp("onnx-cache")))
        patch.setenv("LEUKEMIA_WARM_UP", "0")
        yield


TEST_PASSWORD = "test password 123"


def save_picture(path: Path, size: int, colour: tuple[int, int, int]) -> Path:
    """A ``size``-square RGB picture of ``colour`` saved at ``path`` (format by suffix), with
    one corner pixel from the path: the dataset check uses each picture once by its bytes, so
    test pictures meant as different cells must differ."""
    import hashlib

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), colour)
    image.putpixel((size - 1, size - 1), tuple(hashlib.sha256(str(path).encode()).digest()[:3]))
    image.save(path)
    return path


def make_user(name: str = "Dr. A. Reviewer", roles=("signer",)):
    """An account in the current case database (created once) and its User."""
    from leukemia_core.accounts import AccountInputError, Accounts, User, parse_roles

    accounts = Accounts()
    try:
        accounts.add_user(name, TEST_PASSWORD, roles)
    except AccountInputError:  # exists already (same test, second call)
        accounts.set_roles(name, roles)
    return User(name, parse_roles(roles))


def log_in(at, name: str = "Dr. A. Reviewer", roles=("signer",)):
    """Make ``at`` (an AppTest, before or between runs) logged in as this account."""
    from datetime import UTC, datetime

    from leukemia_core.accounts import LoginSession

    now = datetime.now(UTC)
    at.session_state["login"] = LoginSession(make_user(name, roles), now, now)
    return at


@pytest.fixture(scope="module")
def demo_png() -> bytes:
    """The synthetic demo smear as PNG bytes."""
    import cv2

    from leukemia_core.synthetic import make_demo_smear

    return cv2.imencode(".png", make_demo_smear().image[:, :, ::-1])[1].tobytes()


@pytest.fixture(scope="module")
def app_models(tiny_models_dir, tmp_path_factory) -> Path:
    """The page tests' models: ``tiny``, calibrated on the demo smear so that its cells get every
    label, and ``tiny-b`` with the default calibration."""
    import json
    import shutil

    from leukemia_core import pipeline
    from leukemia_core.accounts import User
    from leukemia_core.classify import Classifier
    from leukemia_core.counting import CellLabel
    from leukemia_core.imaging import prepare_field
    from leukemia_core.models.folder import load_model, set_active_model
    from leukemia_core.models.writing import write_config
    from leukemia_core.review import Review
    from leukemia_core.synthetic import make_demo_smear

    root = tmp_path_factory.mktemp("app_models")
    for name in ("tiny", "tiny-b"):
        shutil.copytree(tiny_models_dir / "tiny", root / name)
    classifier = Classifier(load_model("tiny", root))
    field = prepare_field(make_demo_smear().image, "demo.png")
    session = Review(pipeline.analyze([field], classifier), sample_id="calibration")
    p = sorted(c.blast_probability for c in session.cells if c.model_label != CellLabel.BORDER)
    m = len(p) // 2  # p[:m-1] normal, p[m-1] and p[m] uncertain, p[m+1:] blast
    calibration = {"temperature": 1.0, "threshold": (p[m - 1] + p[m]) / 2,
                   "uncertain_low": (p[m - 2] + p[m - 1]) / 2,
                   "uncertain_high": (p[m] + p[m + 1]) / 2}  # fmt: skip
    config_path = root / "tiny" / "config.json"
    config = json.loads(config_path.read_text())
    write_config(root / "tiny", {**config, "calibration": calibration})
    set_active_model("tiny", root, user=User.shell())
    return root


@pytest.fixture
def db(app_models, monkeypatch, tmp_path) -> Path:
    """A fresh case database for a page test; the app uses :func:`app_models`.

    (test_accounts has a ``db`` of its own.)
    """
    monkeypatch.setenv("LEUKEMIA_MODELS_DIR", str(app_models))
    path = tmp_path / "cases.sqlite3"
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(path))
    return path


class EveryCellABlast:
    """A labeller calling every crop a blast at p 0.95, with no domain check."""

    name, checksum, runtime, input_size = "all-blast", "7" * 64, "none", 64
    description = "test labeller: every cell a blast"

    def decision_settings(self) -> dict:
        return {"threshold": 0.5}

    def label(self, crops, progress=None):
        from leukemia_core.classify import CellPrediction
        from leukemia_core.labellers import CropCalls
        from leukemia_core.types import CellLabel

        return CropCalls([CellPrediction(0.95, CellLabel.BLAST) for _ in crops], None)

    def assess(self, scores):
        return None
