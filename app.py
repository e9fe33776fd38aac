"""ALL blast screening (research use only): navigation, disclaimer, reviewer and model status.

Run with ``streamlit run app.py``. Each page lives in ``pages/``; the image work in
``leukemia_core``. This file holds no image logic.
"""

from __future__ import annotations

import streamlit as st

from ui import state
from ui.common import research_use_banner
from ui.models import model_status

st.set_page_config(
    page_title="ALL blast screening (research use only)",
    page_icon=":material/biotech:",
    layout="wide",
)
navigation = st.navigation(
    {
        "Sample": [
            st.Page("pages/analyze.py", title="Analyze", icon=":material/upload:", default=True),
            st.Page("pages/review.py", title="Review cells", icon=":material/grid_view:"),
            st.Page("pages/counts.py", title="Counts", icon=":material/percent:"),
        ],
        "Record": [
            st.Page("pages/case.py", title="Case & sign-off", icon=":material/verified:"),
            st.Page("pages/cases.py", title="Case list", icon=":material/folder_open:"),
            st.Page("pages/report.py", title="Report", icon=":material/description:"),
        ],
        "Models": [
            st.Page("pages/retrain.py", title="Retrain & compare", icon=":material/model_training:"),
        ],
    }
)
with st.sidebar:
    st.markdown("**ALL blast screening**  \n:red[Research use only]")
    st.text_input(
        "Reviewer",
        key=state.REVIEWER_KEY,
        placeholder="Your name",
        help="Needed to save, reclassify and sign; recorded with every change.",
    )
    session = state.current()
    if session is not None:
        st.caption(
            f"Sample **{session.sample_id}** · {len(session.fields)} image(s) · "
            f"{len(session.cells)} cells · {session.n_uncertain} uncertain · {session.status}"
        )
    model_status()

research_use_banner()
navigation.run()
