"""Report: the printable HTML report (and PDF), the CSV and the JSON of the current case."""

from __future__ import annotations

import hashlib

import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.case_export import case_json, cells_csv
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.pdf import html_to_pdf, pdf_available
from leukemia_core.report import case_report_html, download_stem
from ui import auth, state
from ui.record import current_record, status_line

NO_SCRIPTS = '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">'

auth.require(Permission.ANALYZE)
st.title("Report")
session = state.current()
if session is None or not session.is_saved:
    st.info(
        "The report is made from the case record: save the case first (on the Review cells "
        "or Case & sign-off page), or open a saved case from the Case list."
    )
    st.page_link("pages/case.py", label="Case & sign-off", icon=":material/verified:")
    st.stop()

record = current_record(session)

status_line(session, record)
if not record.is_signed:
    st.warning(
        "This case is not signed: the report says so on every copy. Sign it on the Case & "
        "sign-off page once every cell is reviewed.",
        icon=":material/pending:",
    )
stem = download_stem(record)
html = case_report_html(record)
row = st.container(horizontal=True, wrap=True)  # buttons wrap on a narrow screen, never cut
row.download_button(
    "Report (HTML)", html.encode("utf-8"), f"{stem}_report.html", "text/html",
    key="download_html", icon=":material/description:", on_click="ignore",
)  # fmt: skip
row.download_button(
    "Cells (CSV)", cells_csv(record), f"{stem}_cells.csv", "text/csv",
    key="download_csv", icon=":material/table:", on_click="ignore",
)  # fmt: skip
row.download_button(
    "Case (JSON)", case_json(record).encode("utf-8"), f"{stem}_case.json", "application/json",
    key="download_json", icon=":material/data_object:", on_click="ignore",
)  # fmt: skip
with row:
    # Keyed on the report itself: a reopen elsewhere, an alteration found or a newer report
    # changes the page without adding an audit row to this version.
    pdf_key = "pdf_" + hashlib.sha256(html.encode("utf-8")).hexdigest()[:24]
    if not pdf_available():
        st.caption("PDF: print the HTML report from your browser (no Chromium here).")
    elif pdf_key in st.session_state:
        st.download_button(
            "Report (PDF)", st.session_state[pdf_key], f"{stem}_report.pdf", "application/pdf",
            key="download_pdf", icon=":material/picture_as_pdf:", on_click="ignore",
        )  # fmt: skip
    elif st.button("Make PDF", key="make_pdf", icon=":material/picture_as_pdf:"):
        try:
            with st.spinner("Printing the report to PDF …"):
                st.session_state[pdf_key] = html_to_pdf(html)
            st.rerun()
        except LeukemiaCoreError as error:
            st.error(str(error))

st.caption("Preview (download the HTML report to print it or keep it):")
# The report is built by leukemia_core.report with every user string escaped; the preview also
# forbids scripts outright, so nothing in it can act on the app.
st.iframe(html.replace("<head>", f"<head>{NO_SCRIPTS}", 1), height=900)
