"""ALL blast screening (research use only): login, navigation by role, disclaimer, model status.

Run with ``streamlit run app.py``. Each page lives in ``pages/``; the image work in
``leukemia_core``. This file holds no image logic.
"""

from __future__ import annotations

import streamlit as st

from ui import auth, navigation
from ui.common import flash, research_use_banner
from ui.startup import warm_up_model_soon

SIDEBAR_WIDTH_PX = 240  # leaves an 800 px screen room to review (hidden on phones)


def case_and_model_sidebar() -> None:
    """The open sample and the model, under the account (once logged in)."""
    from ui import state  # TensorFlow: imported after the login gate, so the form shows at once
    from ui.models import model_status

    session = state.current()
    state.remember(session)  # the address names the open case on every page: a reload keeps it
    if session is not None:
        images, cells = len(session.fields), len(session.cells)
        st.caption(
            f"Sample **{session.sample_id}** · {images} image{'s' * (images != 1)} · "
            f"{cells} cell{'s' * (cells != 1)} · {session.n_uncertain} uncertain · "
            f"{session.status}"
        )
    model_status()


st.set_page_config(
    page_title="ALL blast screening (research use only)",
    page_icon="🔬",  # an emoji: a material icon as favicon is fetched from fonts.gstatic.com,
    # which a lab server without internet cannot reach
    layout="wide",
    initial_sidebar_state=SIDEBAR_WIDTH_PX,
)
warm_up_model_soon()  # while the first user logs in, not when they analyse
# No page, no case data, no button before a login; a reload of any page comes back to it.
# Every address, the default page's "analyze" too (Streamlit serves it at both "/" and there).
user = auth.gate([st.Page(f"pages/{p.file}").url_path for p in navigation.every_page()])
menu = navigation.menu(user)
sections = {
    name: [st.Page(f"pages/{p.file}", title=p.title, icon=p.icon,
                   visibility="hidden" if p.hidden else "visible",
                   default=p.file == navigation.DEFAULT_PAGE and not p.hidden) for p in pages]
    for name, pages in menu.items()
}  # fmt: skip
chosen = st.navigation(sections)
hidden = {st.Page(f"pages/{p.file}").url_path for pages in menu.values() for p in pages if p.hidden}
if auth.just_logged_in() and chosen.url_path in hidden:  # left open by the account before
    first = next(p for pages in menu.values() for p in pages if not p.hidden)
    asked = next(p for pages in menu.values() for p in pages
                 if st.Page(f"pages/{p.file}").url_path == chosen.url_path)  # fmt: skip
    flash(navigation.refused_note(asked, user, first), "info")  # a bookmark landed silently
    st.switch_page(f"pages/{first.file}")
with st.sidebar:
    st.markdown("**ALL blast screening**  \n:red[Research use only]")
    auth.sidebar()
    if note := navigation.lone_page_note(menu):
        st.caption(note)
    case_and_model_sidebar()

research_use_banner()
chosen.run()
