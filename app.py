"""ALL blast screening: landing page (research use only).

Gathers images, hands them to :mod:`ui.common` (which calls the core library) and renders.
Run with ``streamlit run app.py``.
"""

from __future__ import annotations

import streamlit as st

from ui.common import (
    NO_CLASSIFIER_NOTE,
    UPLOAD_TYPES,
    research_use_banner,
    show_demo,
    show_upload,
)

st.set_page_config(page_title="ALL blast screening", page_icon=":material/biotech:", layout="wide")
st.title("ALL blast screening — research use only")
research_use_banner()

uploads = st.file_uploader(
    "Blood-smear images (whole fields or single cells)",
    type=list(UPLOAD_TYPES),
    accept_multiple_files=True,
    key="upload",
    help="Stained peripheral-blood smear photographs: JPEG, PNG, TIFF or BMP.",
)
if st.button("Try the synthetic demo smear", key="demo"):
    st.session_state["show_demo"] = True

st.info(NO_CLASSIFIER_NOTE)

if st.session_state.get("show_demo"):
    show_demo()
for uploaded in uploads or []:
    show_upload(uploaded)
