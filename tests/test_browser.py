"""The app in a real browser: upload an ALL-IDB1 field, review, reclassify, download the CSV.

Runs ``streamlit run app.py`` on a free loopback port and drives Debian's Chromium through
Playwright from PyPI (``executable_path``; never ``playwright install``). Skips with the reason
where Chromium or Playwright is missing. Screenshots go to ``test-output/browser/`` (or
``$LEUKEMIA_TEST_OUTPUT/browser``). The model is the default bundled one when ``models/`` has
one, else the tiny test model.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leukemia_core.accounts import Accounts
from leukemia_core.io import read_image
from leukemia_core.models.folder import list_models, models_dir
from leukemia_core.pdf import chromium_path
from leukemia_core.pipeline import analyze
from leukemia_core.store import CaseStore

ROOT = Path(__file__).resolve().parents[1]
FIELD = "all_idb1/images/Im051_1.jpg"
REVIEWER = "Dr. Browser Test"
PASSWORD = "browser test password"

pytestmark = [pytest.mark.browser, pytest.mark.data, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "Chromium is not installed (on Debian: apt-get install chromium chromium-driver; "
            ".ci/run does this where apt-get and root or sudo are available)"
        )
    return path


@pytest.fixture(scope="module")
def output_dir() -> Path:
    base = Path(os.environ.get("LEUKEMIA_TEST_OUTPUT", ROOT / "test-output"))
    folder = base / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server_db(tmp_path_factory) -> Path:
    """The server's case database, with the test's signer account."""
    path = tmp_path_factory.mktemp("db") / "cases.sqlite3"
    Accounts(path).add_user(REVIEWER, PASSWORD, ["signer"])
    return path


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory, server_db):
    """``streamlit run app.py`` on a free port; yields its URL."""
    port = _free_port()
    env = {**os.environ, "LEUKEMIA_CASE_DB": str(server_db),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    if not list_models(models_dir()):
        env["LEUKEMIA_MODELS_DIR"] = str(tiny_models_dir)
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _idle(page, extra_ms: int = 800) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_timeout(1000)  # the running indicator shows only after a moment
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=180_000
    )
    page.wait_for_timeout(extra_ms)


def _metric(page, label: str) -> str:
    card = page.locator("[data-testid=stMetric]").filter(
        has=page.locator("[data-testid=stMetricLabel]", has_text=label)
    )
    return card.first.locator("[data-testid=stMetricValue]").inner_text().strip()


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled exactly ``label``."""
    box = page.locator("[data-testid=stSelectbox]").filter(
        has=page.locator("[data-testid=stWidgetLabel]").get_by_text(label, exact=True)
    )
    box.first.locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()
    _idle(page, 500)


def _split_and_undo_the_fused_clump(page, field: Path, server_db: Path, output_dir: Path) -> None:
    """Im051_1 holds two expert blasts, (905, 380) and (1004, 425), outlined as one cell: split
    it in two on the Review page, see the tally grow and the audit row, then undo."""
    analysis = analyze([read_image(field).rgb], None)  # the same segmentation as the server's
    (clump,) = [c for c in analysis.cells if c.bbox[0] <= 905 < c.bbox[2]
                and c.bbox[1] <= 380 < c.bbox[3] and c.mask()[380 - c.bbox[1], 905 - c.bbox[0]]]  # fmt: skip
    before = int(_metric(page, "Cells counted")) + int(_metric(page, "Uncertain"))
    _choose(page, "Cell", f"cell {clump.cell_id}")
    _choose(page, "Action", "Split into 2 cells")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector(f"text=Cell {clump.cell_id} split into cells", timeout=120_000)
    _idle(page, 1500)
    assert int(_metric(page, "Cells counted")) + int(_metric(page, "Uncertain")) == before + 1
    page.screenshot(path=str(output_dir / "2a-split.png"))
    (case,) = CaseStore(server_db).list_cases()
    record = CaseStore(server_db).load_case(case.case_id)
    split = [a for a in record.audit if a.action == "split"]
    assert len(split) == 3 and split[0].reviewer == REVIEWER
    piece = next(c for c in record.cells if c.origin == f"split of {clump.cell_id}")
    _choose(page, "Cell", f"cell {piece.cell_id}")
    _choose(page, "Action", "Undo the split or merge that made it")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector("text=Undone", timeout=60_000)
    _idle(page, 1500)
    assert int(_metric(page, "Cells counted")) + int(_metric(page, "Uncertain")) == before


def test_upload_review_reclassify_and_download_in_a_real_browser(
    shared_data, chromium, server, server_db, output_dir
):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    field = shared_data / FIELD
    if not field.is_file():
        pytest.skip(f"{field} is absent")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.goto(server)
        page.wait_for_selector("text=Log in", timeout=120_000)  # nothing else without a login
        _idle(page)
        assert page.locator("[data-testid=stFileUploader]").count() == 0
        page.get_by_role("textbox", name="Account name").fill(REVIEWER)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("text=Analyze a sample", timeout=120_000)
        _idle(page)

        # Analyze: upload a real 2592x1944 field through the file uploader
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(field))
        _idle(page)
        page.get_by_role("button", name="Analyze", exact=True).click()
        page.wait_for_selector("text=White cells found", timeout=180_000)
        _idle(page)
        n_cells = int(_metric(page, "White cells found"))
        assert n_cells >= 3
        assert _metric(page, "Blasts").isdigit()
        page.screenshot(path=str(output_dir / "1-analyze.png"))

        # Review: the gallery shows every cell; save the case, then reclassify one cell
        page.get_by_role("link", name="Review every cell").click()
        page.wait_for_selector("[data-testid=stButtonGroup]", timeout=120_000)
        _idle(page, 2000)
        controls = page.locator("[data-testid=stButtonGroup]")
        assert controls.count() == n_cells
        assert page.locator("[data-testid=stImage] img").count() >= n_cells
        page.get_by_role("button", name="Save case").click()
        page.wait_for_selector("text=open: under review", timeout=60_000)
        _idle(page, 1500)
        _split_and_undo_the_fused_clump(page, field, server_db, output_dir)
        assert controls.count() == n_cells
        blasts_before = int(_metric(page, "Blasts"))
        first = controls.first
        was_blast = first.get_by_role("radio", name="Blast").get_attribute("aria-checked")
        new_label = "Normal" if was_blast == "true" else "Blast"
        first.get_by_role("radio", name=new_label).click()
        _idle(page, 1500)
        blasts_after = int(_metric(page, "Blasts"))
        assert blasts_after == blasts_before + (1 if new_label == "Blast" else -1)
        page.screenshot(path=str(output_dir / "2-review.png"))

        # Report: download the CSV and check it
        page.locator("[data-testid=stSidebarNav]").get_by_text("Report", exact=True).click()
        page.wait_for_selector("text=Cells (CSV)", timeout=60_000)
        _idle(page, 1500)
        with page.expect_download() as download:
            page.get_by_role("button", name="Cells (CSV)").click()
        text = Path(download.value.path()).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == n_cells
        assert {r["field_name"] for r in rows} == {field.name}
        changed = [r for r in rows if r["changed_by_reviewer"] == "true"]
        assert len(changed) == 1 and changed[0]["label"] == new_label.lower()
        assert sum(r["label"] == "blast" for r in rows) == blasts_after + sum(
            r["label"] == "blast" for r in rows if r["model_label"] == "border"
        )
        page.screenshot(path=str(output_dir / "3-report.png"))

        # Review the rest of the uncertain queue (it comes first), sign as the logged-in signer,
        # then log out
        page.locator("[data-testid=stSidebarNav]").get_by_text("Review cells", exact=True).click()
        try:
            page.wait_for_selector("[data-testid=stButtonGroup]", timeout=60_000)
        except Exception:
            page.screenshot(path=str(output_dir / "debug-back.png"))
            raise
        _idle(page, 1500)
        while int(_metric(page, "Uncertain")) > 0:
            controls.first.get_by_role("radio", name="Normal").click()
            _idle(page, 400)
        accept = page.get_by_role("button", name=re.compile("^Accept the label of"))
        while accept.count():  # after looking at them: accept the model's call for the rest
            accept.first.click()
            _idle(page, 400)
        page.locator("[data-testid=stSidebarNav]").get_by_text(
            "Case & sign-off", exact=True
        ).click()
        page.wait_for_selector("text=Sign-off", timeout=60_000)
        _idle(page)
        page.get_by_role("button", name="Sign case").click()
        page.wait_for_selector(f"text=Signed by {REVIEWER}", timeout=60_000)
        _idle(page)
        page.screenshot(path=str(output_dir / "4-signed.png"))
        page.locator("[data-testid=stSidebarNav]").get_by_text("Review cells", exact=True).click()
        page.wait_for_selector("text=Correct an outline", timeout=60_000)
        _idle(page)
        assert page.get_by_role("button", name="Apply").is_disabled()  # a signed case refuses
        page.get_by_role("button", name="Log out").click()
        page.wait_for_selector("text=Log in", timeout=60_000)
        _idle(page)
        assert page.locator("[data-testid=stSidebarNav]").count() == 0
        browser.close()
    events = [(e["user_name"], e["event"]) for e in Accounts(server_db).events()]
    assert events[:2] == [(REVIEWER, "logout"), (REVIEWER, "login")]
    assert (output_dir / "2-review.png").stat().st_size > 10_000
