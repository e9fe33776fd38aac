"""leukemia_core.pdf: the case report printed by headless Chromium (skipped where there is none)."""

from __future__ import annotations

import io

import pytest

from leukemia_core.pdf import CHROMIUM_ENV_VAR, PdfUnavailableError, chromium_path, html_to_pdf


def test_a_missing_browser_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(CHROMIUM_ENV_VAR, str(tmp_path / "no-such-chromium"))
    assert chromium_path() is None
    with pytest.raises(PdfUnavailableError, match=r"No Chromium browser was found.*print it"):
        html_to_pdf("<html></html>")


def test_a_browser_that_fails_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(CHROMIUM_ENV_VAR, str(fake))
    with pytest.raises(
        PdfUnavailableError, match=r"did not write the PDF \(exit 3: cannot start\)"
    ):
        html_to_pdf("<html></html>")


def test_the_report_prints_to_a_pdf(monkeypatch):
    monkeypatch.delenv(CHROMIUM_ENV_VAR, raising=False)
    if chromium_path() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the PDF export is optional")
    html = "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><h1>Report Ω</h1>"
    pdf = html_to_pdf(html + "<p>" + "blast " * 2000 + "</p></body></html>")
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type/Page") >= 1


def test_the_case_report_pdf_is_a4_and_holds_the_flagged_cells_crops(monkeypatch, tmp_path):
    """Issue 13: the filed report shows the cells, not only heatmaps, on A4 pages."""
    pypdf = pytest.importorskip("pypdf", reason="pypdf is a dev requirement")
    monkeypatch.delenv(CHROMIUM_ENV_VAR, raising=False)
    if chromium_path() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the PDF export is optional")
    from leukemia_core.accounts import Role, User
    from leukemia_core.pipeline import analyze
    from leukemia_core.report import case_report_html
    from leukemia_core.report_cells import flagged_cells
    from leukemia_core.review import Review
    from leukemia_core.store import CaseStore
    from leukemia_core.synthetic import make_demo_smear

    review = Review(analyze([make_demo_smear().image], None), sample_id="PDF-7")
    store = CaseStore(tmp_path / "cases.sqlite3")
    ana = User("Ana Reviewer", frozenset({Role.REVIEWER}))
    review.save(store, user=ana)
    first, second, *rest = [c for c in review.cells if c.label != "border"]
    review.relabel(store, *first.key, "blast", user=ana)
    review.relabel(store, *second.key, "normal", user=ana)  # relabelled: shown too
    for cell in rest:
        review.relabel(store, *cell.key, "normal", user=ana)
    record = store.load_case(review.case_id)
    flagged = flagged_cells(record)
    assert len(flagged) >= 2
    document = pypdf.PdfReader(io.BytesIO(html_to_pdf(case_report_html(record))))
    width, height = (float(v) for v in document.pages[0].mediabox[2:])
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    text = " ".join(page.extract_text() for page in document.pages)
    assert "PDF-7" in text and "Research use only" in text
    assert f"cell {first.cell_id}" in text and "reviewer: normal" in text.replace("\n", " ")
    images = sum(len(page.images) for page in document.pages)
    assert images >= len(flagged)  # one crop per flagged cell (heatmaps only where stored)
    # Every printed page says whose it is, that it is not signed, and which page of how many
    # (a walkthrough found "NOT SIGNED" only on the last of 8 pages).
    pages = [page.extract_text().replace("\n", " ") for page in document.pages]
    for number, page in enumerate(pages, start=1):
        assert "Sample PDF-7" in page and "version 1" in page, page[:200]
        assert "NOT SIGNED" in page and f"Page {number} of {len(pages)}" in page
        assert "Research use only" in page
    assert "Result" in pages[0] and "blasts (95% CI" in pages[0]


def test_a_long_unbroken_field_name_leaves_every_count_on_the_printed_page(monkeypatch, tmp_path):
    """An instrument's 200-character file name without break points pushed the counts table's
    CI and Level columns off the A4 page (Chromium clips what it cannot shrink)."""
    pypdf = pytest.importorskip("pypdf", reason="pypdf is a dev requirement")
    monkeypatch.delenv(CHROMIUM_ENV_VAR, raising=False)
    if chromium_path() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the PDF export is optional")
    import numpy as np

    from leukemia_core.report import case_report_html
    from leukemia_core.store import CaseStore
    from leukemia_core.types import Cell, Field

    name = ("ALL_patient_smear_slide3_field07_x100_oil_CellaVision_DM96_export_" * 4)[:200]
    cells = [Cell(i, (0, 0, 4, 4), (2.0, 2.0), crop=np.full((4, 4, 3), 7 * i, np.uint8),
                  blast_probability=0.5, model_label="blast" if i < 3 else "normal",
                  reviewed=True) for i in range(33)]  # fmt: skip
    store = CaseStore(tmp_path / "cases.sqlite3")
    case_id = store.create_case(
        "S-0042", [Field(0, name + ".png", np.zeros((48, 64, 3), np.uint8))], cells,
        model_name="m", model_checksum="sha256:0", thresholds={}, created_by="Dr. A",
    )  # fmt: skip
    document = pypdf.PdfReader(io.BytesIO(html_to_pdf(case_report_html(store.load_case(case_id)))))
    width = float(document.pages[0].mediabox[2])
    placed: list[tuple[float, str]] = []
    for page in document.pages:
        page.extract_text(visitor_text=lambda text, cm, tm, *_: placed.append(
            (cm[4] + tm[4] * cm[0], text)) if text.strip() else None)  # fmt: skip
    off_page = [text for x, text in placed if x > width - 20]
    assert not off_page, off_page[:5]
    words = " ".join(text for _, text in placed)
    assert "Level" in words and "(Wilson)" in words and "9.1%" in words
