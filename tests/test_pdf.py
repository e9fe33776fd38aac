"""leukemia_core.pdf: the case report printed by headless Chromium (skipped where there is none)."""

from __future__ import annotations

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
