"""Print an HTML report to PDF with headless Chromium, when a Chromium is installed.

Chromium's print engine honours the report's print stylesheet (page breaks, colours), which is
why it is used rather than an HTML-to-PDF converter of its own. It runs as a separate process on
a temporary file, with every script forbidden by a content-security policy; nothing of the app's
process is shared with it.

The browser is found in ``$LEUKEMIA_CHROMIUM``, else in the usual Debian/Ubuntu locations; on
Debian install it with ``apt-get install chromium``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from leukemia_core.errors import LeukemiaCoreError

CHROMIUM_ENV_VAR = "LEUKEMIA_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class PdfUnavailableError(LeukemiaCoreError):
    """No PDF can be made here (no Chromium, or it failed); the HTML report still works."""


_NO_SCRIPTS = '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">'


def _without_scripts(html: str) -> str:
    """The page with a policy that forbids every script (the report has none of its own)."""
    head = html.find("<head>")
    if head < 0:
        return _NO_SCRIPTS + html
    return html[: head + 6] + _NO_SCRIPTS + html[head + 6 :]


def chromium_path() -> str | None:
    """The Chromium executable to print with, or None."""
    configured = os.environ.get(CHROMIUM_ENV_VAR, "").strip()
    if configured:
        return configured if Path(configured).is_file() else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def pdf_available() -> bool:
    return chromium_path() is not None


def html_to_pdf(html: str, *, timeout_s: float = 90.0) -> bytes:
    """The PDF of a self-contained HTML page (A4, no browser header or footer).

    Raises:
        PdfUnavailableError: No Chromium found, or it failed or timed out.
    """
    executable = chromium_path()
    if executable is None:
        raise PdfUnavailableError(
            "No Chromium browser was found to print the PDF; download the HTML report and "
            f"print it from your browser, or install Chromium (or set {CHROMIUM_ENV_VAR})."
        )
    with tempfile.TemporaryDirectory(prefix="leukemia-report-") as folder:
        page, out = Path(folder) / "report.html", Path(folder) / "report.pdf"
        page.write_text(_without_scripts(html), encoding="utf-8")
        command = [
            executable, "--headless", "--disable-gpu", "--no-pdf-header-footer",
            f"--user-data-dir={Path(folder) / 'profile'}",
            f"--print-to-pdf={out}", page.as_uri(),
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PdfUnavailableError(f"Chromium could not print the report ({error}).") from error
        if not out.is_file() or out.stat().st_size == 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise PdfUnavailableError(
                f"Chromium did not write the PDF (exit {result.returncode}: {' '.join(tail)}); "
                "download the HTML report and print it from your browser instead."
            )
        return out.read_bytes()
