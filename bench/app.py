"""Speed and memory of the app on one 2592x1944 field; prints JSON and a one-line summary.

Usage: ``python bench/app.py [--model NAME] [--field PATH] [--repeats N]``. The field defaults
to ``../shared/data/all_idb1/images/Im051_1.jpg`` when present, else a synthetic field of that
size; the model to the active one (``$LEUKEMIA_MODELS_DIR`` picks another models folder).

- ``upload_to_counts_s``: the real app in ``streamlit.testing`` (AppTest): the field's bytes are
  uploaded through the file uploader, Analyze is clicked, and the page has rendered its counts.
  Median of N after a warm-up run that loads the model.
- ``pipeline_s`` / ``stages_s``: the functions that page calls (read, fit, segment, crop,
  classify, count) without Streamlit, median of N.
- ``heatmaps_s``: :func:`leukemia_core.explain.compute_heatmaps` on all cells of the field in
  one batched call, per method, median of N after a warm-up call.
- ``label_action_s``: one label key (its button) in the cell-by-cell view of the saved case
  until the page has rerun (record written, counts, cell and field redrawn, next cell opened),
  median of 10 cells (AppTest); ``gallery_label_action_s`` the same for a gallery card's control.
- ``app_peak_rss_mb``: peak resident memory of a fresh process running the app (AppTest) with
  the model loaded: analysis of the field, then the Review page with Grad-CAM heatmaps on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The timed runs follow a warm-up run that loads the model; a background load of the active
# model as well would only add a second copy to the measured peak memory when --model differs.
os.environ.setdefault("LEUKEMIA_WARM_UP", "0")

from leukemia_core.imaging import png_bytes  # noqa: E402
from leukemia_core.synthetic import make_smear  # noqa: E402

DEFAULT_FIELD = ROOT.parent / "shared" / "data" / "all_idb1" / "images" / "Im051_1.jpg"
TARGETS = {"upload_to_counts_s": 1.5, "gradcam_s": 4.0, "app_peak_rss_mb": 2560.0,
           "label_action_s": 0.5}  # fmt: skip


def field_bytes(path: Path | None) -> tuple[str, bytes]:
    if path is not None and path.is_file():
        return path.name, path.read_bytes()
    smear = make_smear(1944, 2592, n_wbc=12, n_touching_pairs=2, n_rbc=900,
                       red_cell_diameter_px=70.0, seed=0)  # fmt: skip
    return "synthetic-2592x1944.png", png_bytes(smear.image)


def _navigation_for_apptest() -> None:
    """AppTest in Streamlit 1.67 re-detects ``pages/`` on every run and then skips ``app.py``;
    ``streamlit run`` does not (see tests/conftest.py, apptest_navigation)."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init


def _app(model: str | None):
    """The app, logged in as a signer of the bench's own case database (also a model
    administrator, who may pick a model that is not the active one)."""
    from datetime import UTC, datetime

    from streamlit.testing.v1 import AppTest

    from leukemia_core.accounts import AccountInputError, Accounts, LoginSession, User

    _navigation_for_apptest()
    with contextlib.suppress(AccountInputError):  # a second app in the same run
        Accounts().add_user("bench", "quiet river stones 7", ["signer", "model_admin"])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    now = datetime.now(UTC)
    roles = frozenset({"signer", "model_admin"})
    at.session_state["login"] = LoginSession(User("bench", roles), now, now)
    at.run()
    if model:
        at.selectbox(key="model").set_value(model).run()
    return at


def _upload_and_analyze(at, name: str, data: bytes) -> float:
    start = time.perf_counter()
    (uploader,) = at.file_uploader  # its key changes after each analysis (it starts empty)
    uploader.set_value((name, data, "image/jpeg")).run()
    at.button(key="analyze").click().run()
    seconds = time.perf_counter() - start
    if at.exception or at.error:
        raise SystemExit(f"the app failed: {[e.value for e in [*at.exception, *at.error]]}")
    assert any(m.label == "White cells found" for m in at.metric), "no counts rendered"
    return seconds


def time_app(
    model: str | None, name: str, data: bytes, repeats: int
) -> tuple[list[float], dict, dict[str, list[float]]]:
    at = _app(model)
    _upload_and_analyze(at, name, data)  # warm-up: loads the model
    seconds = [_upload_and_analyze(at, name, data) for _ in range(repeats)]
    session = at.session_state["review_session"]  # as analysed, before the timed labels
    count = session.count()
    found = {"cells": len(session.cells), "counted": count.n_counted, "blasts": count.n_blasts,
             "uncertain": session.n_uncertain, "model": session.model_name,
             "field_px": [session.fields[0].width, session.fields[0].height]}  # fmt: skip
    label_seconds = _time_labels(at)
    return seconds, found, label_seconds


def _time_labels(at, n: int = 10) -> dict[str, list[float]]:
    """Seconds per label action on the Review page of the saved case, until the page has rerun
    (record written, counts redrawn): ``one_by_one``, a key's button in the cell-by-cell view
    (the cell and its field redrawn, the next cell opened); ``gallery``, a card's control (every
    card redrawn)."""
    from ui.workspace import CURRENT_KEY, GALLERY, ONE_BY_ONE, VIEW_KEY, decision_button_key

    at.switch_page("pages/review.py").run()
    at.button(key="review_save_case").click().run()
    times: dict[str, list[float]] = {"one_by_one": [], "gallery": []}
    at.segmented_control(key=VIEW_KEY).set_value(ONE_BY_ONE).run()
    for i in range(n):
        key = decision_button_key("normal" if i % 2 else "blast", at.session_state[CURRENT_KEY])
        start = time.perf_counter()
        at.button(key=key).click().run()
        times["one_by_one"].append(time.perf_counter() - start)
        _check(at)
    at.segmented_control(key=VIEW_KEY).set_value(GALLERY).run()
    keys = [w.key for w in at.segmented_control if w.key and w.key.startswith("relabel_")][:n]
    for i, key in enumerate(keys):
        label = "blast" if i % 2 else "normal"
        start = time.perf_counter()
        at.segmented_control(key=key).set_value(label).run()
        times["gallery"].append(time.perf_counter() - start)
        _check(at)
    return times


def _check(at) -> None:
    if at.exception or at.error:
        raise SystemExit(f"the app failed: {[e.value for e in [*at.exception, *at.error]]}")


def time_pipeline(model: str | None, name: str, data: bytes, repeats: int):
    from leukemia_core.classify import Classifier
    from leukemia_core.imaging import read_for_analysis
    from leukemia_core.models.folder import load_model
    from leukemia_core.pipeline import analyze
    from leukemia_core.review import Review
    from ui.models import BATCH_SIZE

    classifier = Classifier(load_model(model), batch_size=BATCH_SIZE, runtime="auto")  # as the app

    def run():
        prepared = read_for_analysis(data, name, input_size=classifier.input_size)
        session = Review(analyze([prepared], classifier), sample_id="bench")
        session.count()
        return session

    session = run()
    seconds, stages = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        session = run()
        seconds.append(time.perf_counter() - start)
        stages.append(dict(session.fields[0].seconds))
    median_stages = {k: round(statistics.median(s[k] for s in stages), 3) for k in stages[0]}
    return seconds, median_stages, classifier, session


def time_heatmaps(classifier, session, repeats: int) -> dict[str, float]:
    from leukemia_core.explain import METHODS, compute_heatmaps
    from ui.heatmaps import SCORE_MAPS

    crops = [c.crop for c in session.cells]
    options = {"score_maps": SCORE_MAPS, "batch_size": classifier.batch_size}  # as the app calls
    out = {}
    for method in METHODS:
        compute_heatmaps(classifier.model, crops, method=method, **options)  # warm-up: tracing
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            compute_heatmaps(classifier.model, crops, method=method, **options)
            times.append(time.perf_counter() - start)
        out[method] = round(statistics.median(times), 3)
    return out


def child_peak_rss(model: str | None, field: Path | None) -> float:
    """Run :func:`_child` in a fresh process; its peak RSS in MB."""
    command = [sys.executable, __file__, "--child"]
    if model:
        command += ["--model", model]
    if field is not None:
        command += ["--field", str(field)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child(model: str | None, field: Path | None) -> None:
    name, data = field_bytes(field)
    at = _app(model)
    _upload_and_analyze(at, name, data)
    from ui.workspace import GALLERY, SHOWN, SHOWN_KEY, VIEW_KEY

    at.switch_page("pages/review.py").run()
    at.segmented_control(key=SHOWN_KEY).set_value(SHOWN[1]).run()
    # every card with its heatmap: the most
    at.segmented_control(key=VIEW_KEY).set_value(GALLERY).run()
    _check(at)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder name (default: the active model)")
    parser.add_argument("--field", type=Path, default=DEFAULT_FIELD, help="a 2592x1944 field")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["LEUKEMIA_CASE_DB"] = str(Path(folder) / "bench-cases.sqlite3")
        if args.child:
            _child(args.model, args.field)
            return 0
        from leukemia_core.models.folder import active_model_name, read_config

        model = args.model or active_model_name()
        if model is None:
            print("no model installed: put one in models/ or set LEUKEMIA_MODELS_DIR",
                  file=sys.stderr)  # fmt: skip
            return 2
        config = read_config(model)
        name, data = field_bytes(args.field)
        pipeline, stages, classifier, session = time_pipeline(model, name, data, args.repeats)
        heatmaps = time_heatmaps(classifier, session, args.repeats)
        app_seconds, found, label_seconds = time_app(model, name, data, args.repeats)
        rss = child_peak_rss(model, args.field)
    result = {
        "field": name,
        "model": {
            "name": model,
            "architecture": config.architecture,
            "input_size": config.input_size,
            "sha256": config.sha256[:12],
            "runtime": classifier.forward.note,
        },
        "found": found,
        "upload_to_counts_s": round(statistics.median(app_seconds), 3),
        "upload_to_counts_runs_s": [round(s, 3) for s in app_seconds],
        "label_action_s": round(statistics.median(label_seconds["one_by_one"]), 3),
        "label_action_max_s": round(max(label_seconds["one_by_one"]), 3),
        "gallery_label_action_s": round(statistics.median(label_seconds["gallery"]), 3),
        "pipeline_s": round(statistics.median(pipeline), 3),
        "stages_s": stages,
        "heatmaps_s": heatmaps,
        "heatmap_cells": len(session.cells),
        "app_peak_rss_mb": round(rss, 1),
        "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    result["meets_targets"] = {
        "upload_to_counts": result["upload_to_counts_s"] <= TARGETS["upload_to_counts_s"],
        "gradcam": heatmaps["gradcam"] <= TARGETS["gradcam_s"],
        "memory": result["app_peak_rss_mb"] <= TARGETS["app_peak_rss_mb"],
        "label_action": result["label_action_s"] <= TARGETS["label_action_s"],
    }
    print(json.dumps(result, indent=2))
    print(
        f"{name} with {model}: upload→counts {result['upload_to_counts_s']:.2f} s, one label "
        f"{result['label_action_s']:.2f} s "
        f"(pipeline {result['pipeline_s']:.2f} s), Grad-CAM {heatmaps['gradcam']:.2f} s for "
        f"{len(session.cells)} cells, app peak RSS {rss:.0f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
