"""The app in a real browser: upload an ALL-IDB1 field, review every cell by keyboard, sign, and
download the CSV and the PDF report (issue 13), at 1440 and 800 px.

Runs ``streamlit run app.py`` on a free loopback port and drives Debian's Chromium through
Playwright from PyPI (``executable_path``; never ``playwright install``). Skips with the reason
where Chromium or Playwright is missing. Screenshots go to ``test-output/browser/`` (or
``$LEUKEMIA_TEST_OUTPUT/browser``). The model is the default bundled one when ``models/`` has
one, else the tiny test model.
"""

from __future__ import annotations

import csv
import io
import math
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
from leukemia_core.report_cells import flagged_cells
from leukemia_core.store import CaseStore

ROOT = Path(__file__).resolve().parents[1]
FIELD = "all_idb1/images/Im051_1.jpg"
REVIEWER = "Dr. Browser Test"
PASSWORD = "browser test password"
CLUMP_QUESTION = "may be two or more cells pressed together, and one label counts"

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
    env = {**os.environ, "LEUKEMIA_CASE_DB": str(server_db), "LEUKEMIA_WARM_UP": "1",
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
    shown = [*box.first.inner_text().splitlines(), box.first.locator("input").input_value(),
             box.first.locator("input").get_attribute("placeholder") or ""]  # fmt: skip
    if option in shown:  # already chosen
        return
    box.first.locator("input").click()
    box.first.locator("input").fill(option)  # the list shows a few options at a time: filter
    page.get_by_role("option", name=option, exact=True).click()
    _idle(page, 500)


def _lasso(page, outline: list[tuple[float, float]]) -> None:
    """Draw ``outline`` (field pixels) with the lasso tool of the field view."""
    chart = page.locator("[data-testid=stPlotlyChart]").first
    chart.scroll_into_view_if_needed()
    chart.hover()
    chart.locator('[data-title="Lasso Select"]').click()
    screen = chart.locator(".js-plotly-plot").first.evaluate(
        """(gd, points) => {
            const r = gd.getBoundingClientRect(), xa = gd._fullLayout.xaxis;
            const ya = gd._fullLayout.yaxis;
            return points.map(([x, y]) => [r.left + xa._offset + xa.d2p(x),
                                           r.top + ya._offset + ya.d2p(y)]);
        }""",
        outline,
    )
    page.mouse.move(*screen[0])
    page.mouse.down()
    for point in screen[1:]:
        page.mouse.move(*point, steps=3)
    page.mouse.up()
    _idle(page, 1500)


def _split_and_undo_the_fused_clump(page, field: Path, server_db: Path, output_dir: Path) -> None:
    """Im051_1 holds two expert blasts, (905, 380) and (1004, 425), outlined as one cell: split
    it in two on the Review page, see the tally grow and the audit row, then undo; then cut one
    blast out with an outline drawn around it (the lasso), and undo again."""
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
    _undo(page, piece.cell_id, before)
    # the lasso: an outline around the blast at (905, 380) that leaves (1004, 425) outside
    angles = [2 * math.pi * i / 24 for i in range(25)]
    _lasso(page, [(905 + 45 * math.cos(a), 380 + 45 * math.sin(a)) for a in angles])
    page.wait_for_selector(f"text=You drew around part of cell {clump.cell_id}", timeout=60_000)
    _choose(page, "Action", "Cut out what I drew")  # offered first: already chosen
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector(f"text=Cell {clump.cell_id} cut into cells", timeout=120_000)
    _idle(page, 1500)
    assert int(_metric(page, "Cells counted")) + int(_metric(page, "Uncertain")) == before + 1
    page.screenshot(path=str(output_dir / "2b-lasso-cut.png"))
    record = CaseStore(server_db).load_case(case.case_id)
    cut_out, rest = [c for c in record.cells if c.origin == f"split of {clump.cell_id}"
                     and c.label != "replaced"]  # fmt: skip
    assert cut_out.mask()[380 - cut_out.bbox[1], 905 - cut_out.bbox[0]]
    assert rest.mask()[425 - rest.bbox[1], 1004 - rest.bbox[0]]
    _undo(page, cut_out.cell_id, before)


def _undo(page, piece_id: int, shown_before: int) -> None:
    """Undo the split that made cell ``piece_id``; the tally is back to ``shown_before``."""
    _choose(page, "Cell", f"cell {piece_id}")
    _choose(page, "Action", "Undo the split or merge that made it")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector("text=Undone", timeout=60_000)
    _idle(page, 1500)
    assert int(_metric(page, "Cells counted")) + int(_metric(page, "Uncertain")) == shown_before


def _unreviewed(page) -> int:
    caption = page.get_by_text(re.compile(r"Cell \d+ of \d+ · (\d+ not reviewed yet|all reviewed)"))
    found = re.search(r"(\d+) not reviewed yet", caption.first.inner_text())
    return int(found.group(1)) if found else 0


def _position(page) -> tuple[int, int]:
    caption = page.get_by_text(re.compile(r"Cell \d+ of \d+ · ")).first.inner_text()
    position, total = re.search(r"Cell (\d+) of (\d+) · ", caption).groups()
    return int(position), int(total)


def _open_cell(page) -> tuple[int, str]:
    """The workspace's open cell: its id and the model's call."""
    line = page.get_by_text(re.compile(r"P\(blast\) .* · model: ")).first.inner_text()
    return int(re.search(r"Cell (\d+)", line).group(1)), re.search(r"model: (\w+)", line).group(1)


def _press(page, key: str, *, blur: bool = True) -> None:
    if blur:  # as after a click on the page's background
        page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)
    _idle(page, 300)


def _review_by_keyboard(page, output_dir: Path) -> dict[int, str]:
    """Review every cell from the keyboard only; returns the cells relabelled and to what."""
    relabelled: dict[int, str] = {}
    done, asked = 0, []
    while (waiting := _unreviewed(page)) > 0:
        cell_id, call = _open_cell(page)
        if done == 2:  # step away and back: the arrows move through the queue
            away, back = "ArrowRight", "ArrowLeft"
            if _position(page)[0] == _position(page)[1]:  # the last cell: step back first
                away, back = back, away
            _press(page, away)
            assert _open_cell(page)[0] != cell_id
            _press(page, back)
            assert _open_cell(page)[0] == cell_id
        blur = True
        if done == 0:  # the view switch keeps the focus after a click, and must not eat keys
            view = page.locator("[data-testid=stButtonGroup] button", has_text="One cell at a time")
            view.click()  # the page takes the focus back, as after a click on its background
            _idle(page, 300)
            assert page.evaluate("document.activeElement.tagName") == "BODY"
            _idle(page, 300)
            blur = False
        if done == 4 and call != "Uncertain":  # mouse, then keys: focus stays on a button
            page.get_by_role("button", name="Next").click()
            _idle(page, 300)
            page.get_by_role("button", name="Previous").click()
            _idle(page, 300)
            assert _open_cell(page)[0] == cell_id
            blur = False
        if call == "Uncertain":
            key, relabelled[cell_id] = "n", "normal"
        elif done == 1:  # one change of the model's call
            key, relabelled[cell_id] = ("n", "normal") if call == "Blast" else ("b", "blast")
        else:
            key = "Space"  # accept the model's call
        _press(page, key, blur=blur)
        if _unreviewed(page) == waiting and page.get_by_text(CLUMP_QUESTION).count():
            asked.append(cell_id)  # a possible clump: one key would count its cells once
            _press(page, key)  # the same key again: the reviewer says it is one cell
        assert _unreviewed(page) == waiting - 1, f"{key} on cell {cell_id} reviewed nothing"
        done += 1
        if done == 3:
            page.screenshot(path=str(output_dir / "2-review-keyboard-1440.png"))
    assert done >= 10  # issue 13: at least ten cells reviewed by keyboard only
    assert len(asked) == 1  # the field's flagged clump (split and undone above) asked once
    return relabelled


def _no_overflow(page) -> None:
    """Nothing wider than the window, no table that scrolls sideways, and no metric value or
    button label cut short (cut with an ellipsis)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    sideways = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=stMain] [data-testid=stTable], [data-testid=stMain] [data-testid=stTable] *, '
        + '[data-testid=stMain] [data-testid=stDataFrame] .dvn-scroller')]
        .filter(e => e.scrollWidth > e.clientWidth + 1)
        .map(e => e.closest('[data-testid]').getAttribute('data-testid'))""")
    assert sideways == [], f"tables scrolling sideways at this width: {sideways}"
    cut = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=stMetricValue], [data-testid=stMetricValue] *, ' +
        '[data-testid=stMain] button, [data-testid=stMain] button *')]
        .filter(e => getComputedStyle(e).textOverflow === 'ellipsis')
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)""")
    assert cut == [], f"cut at this width: {cut}"


def _log_in(page) -> None:
    page.get_by_role("textbox", name="Account name").fill(REVIEWER)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_upload_review_by_keyboard_sign_and_download_the_pdf_in_a_real_browser(
    shared_data, chromium, server, server_db, output_dir
):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pypdf = pytest.importorskip("pypdf", reason="pypdf is a dev requirement")
    field = shared_data / FIELD
    if not field.is_file():
        pytest.skip(f"{field} is absent")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        # The first visit to a fresh server, at a page's address (a bookmark): the login form,
        # not "Page not found" nor a blank page run outside app.py (ui.auth._through_the_app)
        page.goto(f"{server}/analyze")
        page.wait_for_selector("text=Log in", timeout=120_000)
        _idle(page)
        assert page.locator("[data-testid=stFileUploader]").count() == 0
        _log_in(page)
        page.wait_for_selector("text=Analyze a sample", timeout=120_000)
        _idle(page)

        # Analyze: upload a real 2592x1944 field through the file uploader
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(field))
        _idle(page)
        page.get_by_role("button", name="Analyze", exact=True).click()
        page.wait_for_selector("text=White cells found", timeout=180_000)
        _idle(page)
        n_cells = int(_metric(page, "White cells found"))
        assert n_cells >= 10
        assert _metric(page, "Blasts").isdigit()
        page.screenshot(path=str(output_dir / "1-analyze-1440.png"))
        page.set_viewport_size({"width": 800, "height": 900})
        _idle(page, 1000)
        page.screenshot(path=str(output_dir / "1-analyze-800.png"))
        _no_overflow(page)
        page.set_viewport_size({"width": 1440, "height": 900})

        # Review: save the case, correct an outline, then every cell from the keyboard
        page.get_by_role("link", name="Review every cell").click()
        page.wait_for_selector("text=previous/next", timeout=120_000)
        _idle(page, 1500)
        page.get_by_role("button", name="Save case").click()
        page.wait_for_selector("text=open: under review", timeout=60_000)
        _idle(page, 1500)
        _split_and_undo_the_fused_clump(page, field, server_db, output_dir)
        # A click on a cell's number in the field view opens that cell
        chart = page.locator("[data-testid=stPlotlyChart] .scatterlayer")
        texts = chart.locator(".textpoint text").evaluate_all("els => els.map(e => e.textContent)")
        numbers = [int(t) for t in texts]
        opened = _open_cell(page)[0]
        target = next(i for i, number in enumerate(numbers) if number != opened)
        chart.locator(".points path").nth(target).click(force=True)
        _idle(page, 1000)
        assert _open_cell(page)[0] == numbers[target]
        relabelled = _review_by_keyboard(page, output_dir)
        assert int(_metric(page, "Uncertain")) == 0
        assert page.get_by_text(re.compile("^Provisional: ")).count() == 0
        (case,) = CaseStore(server_db).list_cases()
        record = CaseStore(server_db).load_case(case.case_id)
        reviews = [a for a in record.audit if a.action in ("reviewed", "relabel")]
        assert len(reviews) >= 10 and {a.reviewer for a in reviews} == {REVIEWER}
        assert {c.cell_id: c.label for c in record.cells if c.changed_by_reviewer} == relabelled
        page.set_viewport_size({"width": 800, "height": 900})
        _idle(page, 1000)
        page.get_by_text("previous/next").evaluate("e => e.scrollIntoView({block: 'start'})")
        _idle(page, 500)
        page.screenshot(path=str(output_dir / "2-review-keyboard-800.png"))
        _no_overflow(page)
        page.set_viewport_size({"width": 1440, "height": 900})
        page.get_by_text("Gallery", exact=True).click()  # the gallery: one card per cell
        cards = "[class*=st-key-relabel_] [data-testid=stButtonGroup]"  # a card's label control
        page.wait_for_selector(cards, timeout=60_000)
        _idle(page, 1500)
        assert page.locator(cards).count() == n_cells
        assert page.get_by_text("not reviewed yet").count() == 0

        # Report: the CSV holds every cell with the reviewer's changes
        page.locator("[data-testid=stSidebarNav]").get_by_text("Report", exact=True).click()
        page.wait_for_selector("text=Cells (CSV)", timeout=60_000)
        _idle(page, 1500)
        with page.expect_download() as download:
            page.get_by_role("button", name="Cells (CSV)").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
        assert len(rows) == n_cells and {r["field_name"] for r in rows} == {field.name}
        changed = {
            int(r["cell_id"]): r["label"] for r in rows if r["changed_by_reviewer"] == "true"
        }
        assert changed == relabelled

        # Sign as the logged-in signer, then download the PDF report and read it
        page.locator("[data-testid=stSidebarNav]").get_by_text(
            "Case & sign-off", exact=True
        ).click()
        page.wait_for_selector("text=Sign-off", timeout=60_000)
        _idle(page)
        # What the form shows is what gets signed, without pressing "Save for the report"
        page.get_by_role("textbox", name="Patient id (optional)").fill("MRN-55")
        page.get_by_role("textbox", name="Comment").fill("Reviewed in the browser test")
        page.keyboard.press("Tab")
        _idle(page)
        page.get_by_role("button", name="Sign case").click()
        page.wait_for_selector(f"text=Signed by {REVIEWER}", timeout=60_000)
        _idle(page)
        signed = CaseStore(server_db).load_case(case.case_id)
        assert (signed.patient_id, signed.comment) == ("MRN-55", "Reviewed in the browser test")
        page.screenshot(path=str(output_dir / "3-signed-1440.png"))
        page.locator("[data-testid=stSidebarNav]").get_by_text("Report", exact=True).click()
        page.wait_for_selector("text=Make PDF", timeout=60_000)
        _idle(page)
        page.get_by_role("button", name="Make PDF").click()
        page.wait_for_selector("text=Report (PDF)", timeout=120_000)
        _idle(page)
        with page.expect_download() as download:
            page.get_by_role("button", name="Report (PDF)").click()
        document = pypdf.PdfReader(download.value.path())
        record = CaseStore(server_db).load_case(case.case_id)
        width, height = (float(v) for v in document.pages[0].mediabox[2:])
        assert (round(width), round(height)) == (595, 842)  # A4
        text = " ".join(p.extract_text() for p in document.pages).replace("\n", " ")
        assert record.sample_id in text and "Research use only" in text and REVIEWER in text
        assert "MRN-55" in text and "Reviewed in the browser test" in text
        flagged = flagged_cells(record)
        assert flagged and sum(len(p.images) for p in document.pages) >= len(flagged)
        page.screenshot(path=str(output_dir / "4-report-1440.png"))
        page.set_viewport_size({"width": 800, "height": 900})
        _idle(page, 1000)
        page.screenshot(path=str(output_dir / "4-report-800.png"))
        _no_overflow(page)
        page.locator("[data-testid=stSidebarNav]").get_by_text("Counts", exact=True).click()
        page.wait_for_selector("text=Blast %", timeout=60_000)
        _idle(page)
        page.screenshot(path=str(output_dir / "5-counts-800.png"))
        _no_overflow(page)
        # A reload (after moving by the sidebar) asks for a login and comes back to the case
        assert f"case={case.case_id}" in page.url
        page.reload()
        page.wait_for_selector("text=Log in", timeout=60_000)
        _idle(page)
        assert page.get_by_text("Page not found").count() == 0
        _log_in(page)
        page.wait_for_selector("text=Blast %", timeout=60_000)  # the same page again
        _idle(page)
        assert page.locator("[data-testid=stSidebar]").get_by_text(record.sample_id).count()
        page.locator("[data-testid=stSidebarNav]").get_by_text("Case list", exact=True).click()
        page.wait_for_selector("text=Find cases", timeout=60_000)
        _idle(page)
        page.screenshot(path=str(output_dir / "6-case-list-800.png"))
        _no_overflow(page)
        page.set_viewport_size({"width": 1440, "height": 900})

        # A signed case refuses changes; log out
        page.locator("[data-testid=stSidebarNav]").get_by_text("Review cells", exact=True).click()
        page.wait_for_selector("text=Correct an outline", timeout=60_000)
        _idle(page)
        assert page.get_by_role("button", name="Apply").is_disabled()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_selector("text=Log in", timeout=60_000)
        _idle(page)
        assert page.locator("[data-testid=stSidebarNav]").count() == 0
        browser.close()
    events = [(e["user_name"], e["event"]) for e in Accounts(server_db).events()]
    assert events[:2] == [(REVIEWER, "logout"), (REVIEWER, "login")]
    assert (output_dir / "2-review-keyboard-1440.png").stat().st_size > 10_000
