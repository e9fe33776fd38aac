"""Analyze: upload the images of one sample (or try the samples), pick the model, run."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.counting import interval_text, percent_text
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.io import FORMATS_TEXT
from leukemia_core.pipeline import MODE_CELLS, MODE_FIELDS
from leukemia_core.pressed import field_notes_now
from leukemia_core.review import Review
from leukemia_core.types import CellLabel
from ui import auth, state
from ui.analysis import run_analysis
from ui.common import (
    UPLOAD_TYPES,
    domain_warning,
    field_warning_text,
    flash,
    metric_row,
    provisional_note,
    quality_warnings,
    show_flashes,
)
from ui.models import (
    available_models,
    describe,
    get_classifier,
    model_card_dialog,
    model_config,
    no_model_help,
    plain_summary,
)
from ui.samples import CREDITS, DRAWING_NOTE, drawing_files, sample_files

MODE_NAMES = {
    MODE_FIELDS: "Whole fields (smear photographs)",
    MODE_CELLS: "Single cells (one cell per image)",
}
CLEAR_SAMPLE_ID = "analyze_clear_sample_id"  # set after an analysis: the id box starts empty
# Files of one sample: after an analysis, or when the mode changes, the upload box starts empty
# (a new key), so a field never joins the next sample's single cells unseen.
UPLOADS_KEY = "analyze_uploads"

auth.require(Permission.ANALYZE)
st.title("Analyze a sample")
show_flashes()
st.markdown(
    "Upload the photographs of **one** stained blood smear. The app finds every white cell, "
    "the model pre-classifies each one as blast or normal, and you review every cell before "
    "signing, as with a digital-morphology analyser."
)

mode = st.radio(
    "What do the images show?",
    options=list(MODE_NAMES),
    format_func=MODE_NAMES.get,
    key="mode",
    horizontal=True,
    persist_state="session",
)
left, right = st.columns([3, 2], gap="large")
with right:
    models = available_models()  # the active model first
    chooses_models = auth.user().can(Permission.MANAGE_MODELS)
    if not chooses_models:
        # A model no model administrator made active (an adaptation not yet checked, a test
        # trained on a few cells) is no model a lab's sample is analysed with.
        models = models[:1]
    model_name, model_broken = None, False
    if models:
        model_name = st.selectbox(
            "Classifier model",
            models,
            key="model",
            format_func=lambda name: f"{name} (active)" if name == models[0] else name,
            help="The lab's active model (a model administrator chooses it on the Retrain "
            "page); model administrators may try the others here."
            if chooses_models
            else "The lab's active model: a model administrator chooses it on the Retrain page.",
            persist_state="session",
        )
        details = []
        try:
            config = model_config(model_name)
            # the full name: a narrow picker cuts long ones (a model and its -site1 version)
            st.caption(f"**{model_name}**: {plain_summary(config)}")
            details.append(describe(config))
        except LeukemiaCoreError as error:
            st.error(str(error))
            model_name = None
        try:
            if model_name:  # loaded and warmed up before the first sample
                details.append(f"Network run by {get_classifier(model_name).forward.note}.")
        except LeukemiaCoreError as error:
            st.error(f"{error} Pick another model, or restore this one's folder.")
            model_broken = True
        if details:
            with st.expander("Model details"):
                st.caption("  \n".join(details))
                if st.button("Read the model card", key="model_card",
                             icon=":material/description:", disabled=not model_name):  # fmt: skip
                    model_card_dialog(model_name)
    else:
        st.info(no_model_help())
    if st.session_state.pop(CLEAR_SAMPLE_ID, False):  # the last sample's id is not the next's
        st.session_state["sample_id"] = ""
    sample_id = st.text_input(
        "Sample id for the next analysis (optional)",
        key="sample_id",
        max_chars=64,
        placeholder="accession number",
        help="Identifies the specimen in the case record; no patient names are needed. It names "
        "the images analysed next: a sample already analysed is named when it is saved on the "
        "Review page.",
        persist_state="session",
    )
with left:
    emptied = st.session_state.setdefault(UPLOADS_KEY, {"mode": mode, "count": 0})
    if emptied["mode"] != mode:
        emptied.update(mode=mode, count=emptied["count"] + 1)
    uploads = st.file_uploader(
        f"Images of one sample: {FORMATS_TEXT}",
        type=list(UPLOAD_TYPES),
        accept_multiple_files=True,
        key="upload" + f"_{emptied['count']}" * bool(emptied["count"]),
        help="Several fields of the same smear add up to one count. Very large images are "
        "downscaled to the model's scale, with a note.",
    )
    names = {}
    if uploads:
        with st.expander("Field names (optional)"):
            for i, uploaded in enumerate(uploads):
                names[i] = st.text_input(
                    f"Name of {uploaded.name}", value=uploaded.name,
                    key=f"field_name_{i}_{uploaded.name}",
                )  # fmt: skip
    # More fields of the smear for the case under review ("count more cells"), with the case's
    # model: the labels given so far are kept. With such a case open, adding is the main action
    # (a walk pressed the highlighted Analyze and got a new unsaved sample instead).
    open_case = state.current()
    can_add = (open_case is not None and open_case.is_saved and not open_case.is_signed
               and open_case.mode == mode and open_case.model_name == model_name)  # fmt: skip
    add_to_case = False
    if can_add:  # first: the main action while a case is open
        add_to_case = st.button(
            "Add to the open case", key="add_to_case", disabled=not uploads or model_broken,
            icon=":material/add:", type="primary",
            help="Analyse these images and add them as more fields of that case, keeping every "
            "label given so far; for more cells of the same smear.",
        )  # fmt: skip
        # the sample's id below, not in the label: a long id cut the button short at 800 px
        st.caption(f"The open case: {open_case.sample_id}, version {open_case.version}.")
    run_uploads = st.button(
        "Analyze as a new sample" if can_add else "Analyze", key="analyze",
        type="secondary" if can_add else "primary", disabled=not uploads or model_broken,
        icon=":material/play_arrow:",
    )  # fmt: skip
    run_samples = st.button("Try the sample images", key="try_sample",
                            icon=":material/science:", disabled=model_broken)  # fmt: skip
    st.caption(CREDITS[mode])
    run_drawing = False
    if mode == MODE_FIELDS:
        run_drawing = st.button("Try a synthetic smear", key="try_drawing",
                                icon=":material/draw:", disabled=model_broken)  # fmt: skip
        st.caption(DRAWING_NOTE)


def failure_text(failure) -> str:
    """Why a file was not analysed, naming the file once."""
    prefix = "" if failure.name in failure.message else f"{failure.name}: "
    return f"{prefix}{failure.message}"


def show_failures(session: Review) -> None:
    """One plain error per file that could not be analysed."""
    for failure in session.failures:
        st.error(failure_text(failure), icon=":material/broken_image:")


files = None
if add_to_case and uploads:
    uploaded = [(names.get(i) or f.name, f.getvalue()) for i, f in enumerate(uploads)]
    analysed = None
    try:
        analysed = run_analysis(uploaded, mode=mode, model_name=model_name,
                                sample_id=open_case.sample_id)  # fmt: skip
        n_cells = state.add_fields(open_case, analysed)
    except LeukemiaCoreError as error:  # said at the top, where the user looks after the click
        for failure in analysed.failures if analysed is not None else ():
            flash(failure_text(failure))
        flash(f"Nothing was added to {open_case.sample_id}: {error}")
        st.rerun()
    else:
        for failure in analysed.failures:  # said after the rerun, beside the success
            flash(failure_text(failure))
        n_fields = len(analysed.fields)
        flash(f"{n_fields} field{'s' * (n_fields != 1)} with {n_cells} cell"
              f"{'s' * (n_cells != 1)} added to {open_case.sample_id}; review the new cells.",
              "success")  # fmt: skip
        for field in analysed.fields:  # a field of another smear or microscope stands out
            if reasons := field_warning_text(field):
                flash(f"**{field.name}**: {reasons} Its cells were sent to review; if it is not "
                      "of this smear, exclude them there.", "warning")  # fmt: skip
        if open_case.domain is not None and open_case.domain.warned:
            domain = open_case.domain
            flash(f"With the new fields the sample differs from the training data (domain "
                  f"score {domain.score:.2f}, limit {domain.limit:.2f}): every unreviewed cell "
                  "of the case is now in the review queue.", "warning")  # fmt: skip
        st.session_state[UPLOADS_KEY]["count"] += 1
        st.rerun()
elif run_uploads and uploads:
    files = [(names.get(i) or f.name, f.getvalue()) for i, f in enumerate(uploads)]
elif run_samples:
    files = sample_files(mode)
elif run_drawing:
    files = drawing_files()
if files:
    sample = sample_id.strip() or f"S-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        analysed = run_analysis(files, mode=mode, model_name=model_name, sample_id=sample)
    except LeukemiaCoreError as error:
        st.error(str(error))
    else:
        if not analysed.fields:  # no image could be read: no empty sample; the open one stays
            show_failures(analysed)
            st.info("Nothing was analysed, so no sample was made: fix or replace the files "
                    "named above and analyse again.", icon=":material/info:")  # fmt: skip
        else:
            previous = state.current()
            if previous is not None and not previous.is_saved and previous.cells:
                # The new sample replaces it: say so, rather than let it vanish unremarked.
                flash(f"Sample {previous.sample_id}, which was not saved, was replaced by "
                      f"{analysed.sample_id}; analyse its images again to get it back.", "info")  # fmt: skip
            state.set_current(analysed)
            st.session_state[CLEAR_SAMPLE_ID] = True
            if run_uploads:
                st.session_state[UPLOADS_KEY]["count"] += 1
            # The results are drawn below the upload box, often below the screen's edge: say so.
            # A box, not a toast: a toast covered the figures on an 800 px screen and the next
            # page's research-use banner.
            n_cells, n_images = len(analysed.cells), len(analysed.fields)
            flash(f"Sample {analysed.sample_id}: {n_cells} white cell{'s' * (n_cells != 1)} "
                  f"found in {n_images} image{'s' * (n_images != 1)}; the results are below.",
                  "success")  # fmt: skip
            st.rerun()  # so the sidebar, drawn before this page, shows the new sample too


def show_results(session: Review) -> None:
    st.subheader(f"Sample {session.sample_id}", divider="gray")
    show_failures(session)
    for field in session.fields:
        for note in field_notes_now(field.notes, session.field_cells(field.index)):
            st.info(f"**{field.name}**: {note}", icon=":material/info:")
    quality_warnings(session)
    domain_warning(session)
    count = session.count()
    metric_row(
        ("Images analysed", len(session.fields)),
        ("White cells found", len(session.cells)),
        (
            "Cells counted",
            count.n_counted,
            "Blast and normal cells: the percentage's "
            "denominator (cells cut by the border, excluded or uncertain are not counted).",
        ),
        ("Blasts", count.n_blasts),
        ("Blast %", percent_text(count), "Of the cells counted (blast + normal)."),
        (
            "Uncertain",
            session.n_uncertain,
            "Cells the model is unsure of: each needs a label. "
            "Every cell is reviewed before signing.",
        ),
    )
    provisional_note(session)
    if count.percent is None:
        st.markdown(count.interpretation)
    else:  # the reading first: it says whether the figures are before review
        st.markdown(f"{count.interpretation}  \n**95% interval (Wilson):** {interval_text(count)}.")
    if count.hint:
        st.warning(count.hint, icon=":material/rule:")
    if session.fields and session.mode == MODE_FIELDS:
        counts, processing = field_tables(session)
        # Static tables wrap their text to the page: no sideways scrolling on a narrow screen.
        st.table(counts, hide_index=True, border="horizontal")
        with st.expander("Processing details per field"):
            st.table(processing, hide_index=True, border="horizontal")
    if session.cells:  # a signed case is frozen: nothing is left to do there
        label = ("Look at its cells (signed: frozen)" if session.is_signed
                 else "**Next: review every cell**")  # fmt: skip
        st.page_link("pages/review.py", label=label, icon=":material/arrow_forward:")


def field_tables(session: Review) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per field: the counts a reader needs, and the processing figures for the details."""
    counts, processing = [], []
    sample_warned = session.domain is not None and session.domain.warned
    for field, count in zip(session.fields, session.field_counts(), strict=True):
        cells = session.field_cells(field.index)
        uncertain = sum(c.label == CellLabel.UNCERTAIN for c in cells)
        # Where every found cell went, in one column that wraps: a table of 800 px holds no
        # more columns than it had
        counts.append({
            "Field": field.name,
            "Cells found": f"{len(cells)} found: {count.n_counted} counted, {uncertain} uncertain, "
            f"{count.n_excluded - uncertain} left out",
            "Blasts": count.n_blasts,
            "Blast %": percent_text(count),
            "95% CI": interval_text(count),
        })  # fmt: skip
        processing.append({"Field": field.name, "Size (px)": f"{field.width}×{field.height}",
                           "Seconds": f"{sum(field.seconds.values()):.2f}"})  # fmt: skip
        if field.domain is not None and field.domain.score is not None:
            warned = ("yes" if field.domain.warned else "no, but the sample is" if sample_warned
                      else "no")  # fmt: skip
            counts[-1]["Unlike training data"] = warned  # short: the table fits 800 px
            processing[-1]["Domain score"] = f"{field.domain.score:.2f}"
    return pd.DataFrame(counts), pd.DataFrame(processing)


session = state.current()
if session is not None:
    show_results(session)
