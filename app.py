"""ALL blast screening (research use only): login, navigation by role, disclaimer, model status.

Run with ``streamlit run app.py``. Each page lives in ``pages/``; the image work in
``leukemia_core``. This file holds no image logic.
"""

from __future__ import annotations

import streamlit as st

from leukemia_core.accounts import Permission
from ui import auth, state
from ui.common import research_use_banner
from ui.models import model_status, warm_up_in_background

SIDEBAR_WIDTH_PX = 240  # leaves an 800 px screen room to review (hidden on phones)

st.set_page_config(
    page_title="ALL blast screening (research use only)",
    page_icon="🔬",  # an emoji: a material icon as favicon is fetched from fonts.gstatic.com,
    # which a lab server without internet cannot reach
    layout="wide",
    initial_sidebar_state=SIDEBAR_WIDTH_PX,
)
sample_pages = [
    st.Page("pages/analyze.py", title="Analyze", icon=":material/upload:", default=True),
    st.Page("pages/review.py", title="Review cells", icon=":material/grid_view:"),
    st.Page("pages/counts.py", title="Counts", icon=":material/percent:"),
]
record_pages = [
    st.Page("pages/case.py", title="Case & sign-off", icon=":material/verified:"),
    st.Page("pages/cases.py", title="Case list", icon=":material/folder_open:"),
    st.Page("pages/report.py", title="Report", icon=":material/description:"),
]
model_pages = [
    st.Page("pages/retrain.py", title="Retrain & compare", icon=":material/model_training:")
]
admin_pages = [st.Page("pages/accounts.py", title="Accounts", icon=":material/group:")]
every_page = sample_pages + record_pages + model_pages + admin_pages
warm_up_in_background()  # while the first user logs in, not when they analyse
# No page, no case data, no button before a login; a reload of any page comes back to it.
user = auth.gate([page.url_path for page in every_page if page.url_path])  # "" is the default
sections = {"Sample": sample_pages, "Record": record_pages}
if not user.can(Permission.ANALYZE):  # e.g. an account that only manages accounts
    sections = {}
if user.can(Permission.MANAGE_MODELS):
    sections["Models"] = model_pages
if user.can(Permission.MANAGE_USERS):
    sections["Admin"] = admin_pages
navigation = st.navigation(sections)
with st.sidebar:
    st.markdown("**ALL blast screening**  \n:red[Research use only]")
    auth.sidebar()
    session = state.current()
    state.remember(session)  # the address names the open case on every page: a reload keeps it
    if session is not None:
        st.caption(
            f"Sample **{session.sample_id}** · {len(session.fields)} image(s) · "
            f"{len(session.cells)} cells · {session.n_uncertain} uncertain · {session.status}"
        )
    model_status()

research_use_banner()
navigation.run()
