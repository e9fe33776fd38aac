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


def pages(*specs: tuple[str, str, str], hidden: bool = False) -> list:
    """``st.Page``s of ``(file, title, icon)``; hidden ones are left out of the menu."""
    visibility = "hidden" if hidden else "visible"
    return [st.Page(f"pages/{file}", title=title, icon=icon, visibility=visibility,
                    default=file == "analyze.py" and not hidden)
            for file, title, icon in specs]  # fmt: skip


SECTIONS = {  # section -> (the permission that shows it, its pages)
    "Sample": (Permission.ANALYZE, (("analyze.py", "Analyze", ":material/upload:"),
                                    ("review.py", "Review cells", ":material/grid_view:"),
                                    ("counts.py", "Counts", ":material/percent:"))),
    "Record": (Permission.ANALYZE, (("case.py", "Case & sign-off", ":material/verified:"),
                                    ("cases.py", "Case list", ":material/folder_open:"),
                                    ("report.py", "Report", ":material/description:"))),
    "Models": (Permission.MANAGE_MODELS, (("retrain.py", "Retrain & compare",
                                           ":material/model_training:"),)),
    "Admin": (Permission.MANAGE_USERS, (("accounts.py", "Accounts", ":material/group:"),)),
}  # fmt: skip
warm_up_in_background()  # while the first user logs in, not when they analyse
# No page, no case data, no button before a login; a reload of any page comes back to it.
user = auth.gate([file.removesuffix(".py") for _, specs in SECTIONS.values()
                  for file, _, _ in specs if file != "analyze.py"])  # fmt: skip
sections = {name: pages(*specs) for name, (permission, specs) in SECTIONS.items()
            if user.can(permission)}  # fmt: skip
# Pages the account may not use are in no menu, but their address still opens them, where
# they say which role is needed (without them an address typed or bookmarked landed silently
# on another page).
refused = [page for name, (permission, specs) in SECTIONS.items()
           if not user.can(permission) for page in pages(*specs, hidden=True)]  # fmt: skip
if refused:
    sections.setdefault(next(iter(sections), "Sample"), []).extend(refused)
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
