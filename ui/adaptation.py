"""The Retrain page's "Adapt to this lab" section: a lab's signed cells -> a new model version.

The work is :func:`train.adapt_model.adapt_model`; this module gathers the cells, shows what
was found and what the adaptation changed, and makes the new version active only when asked.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import streamlit as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models.adapted_check import MIN_CHECK_SAMPLES, activation_refusals
from leukemia_core.models.folder import active_model_name, list_models, read_config
from train import jobs
from train.adapt import (
    MIN_HEAD_CELLS_PER_CLASS,
    VARIANT_WORDS,
    AdaptationError,
    check_cells,
    worse_than_before,
)
from train.adapt_model import adapt_model, next_site_name, require_sample_ids
from train.data_roots import (
    NOT_CONFIGURED,
    data_roots,
    load_under_roots,
    relative_name,
    resolve_under_roots,
)
from train.groups import bank_group
from train.records import BLAST, CellTable
from train.reviewed_cases import export_reviewed_cases, signed_cases_words
from ui import auth, state
from ui.models import activate

CELLS_KEY = "adapt_cells"  # {"table": CellTable, "words": str}
ADAPTED_KEY = "adapt_result"  # name of the version made in this session
SOURCES = ("Signed cases", "Folder on this server")
MIN_HEAD_CELLS = 200
FIGURES = {"balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
           "specificity": "specificity", "ece": "ECE",
           "confident_miss_rate": "confident misses"}  # fmt: skip


def _gather(source: str, path: str) -> None:
    """Read the cells into the session, or say why they cannot be used."""
    try:
        if source == SOURCES[0]:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            store = state.case_store()
            table = export_reviewed_cases(store, jobs.runs_dir() / "datasets" / f"adapt-{stamp}")
            words = signed_cases_words(store, table)
        else:  # a typed server path: only under the data roots
            roots = data_roots()
            table, _ = load_under_roots(path, roots, require_both_classes=False)
            require_sample_ids(table)
            words = relative_name(resolve_under_roots(path, roots), roots)
    except (LeukemiaCoreError, OSError) as error:
        st.session_state.pop(CELLS_KEY, None)
        st.error(f"These cells cannot be used: {error}")
        return
    st.session_state[CELLS_KEY] = {"table": table, "words": words}


def _counts(table: CellTable) -> bool:
    """Cells and samples per class; True when they are enough to adapt on."""
    is_blast = np.array([r.label == BLAST for r in table.records])
    groups = np.array([bank_group(r) for r in table.records])
    cols = st.columns(4)
    cols[0].metric("Cells", len(is_blast))
    cols[1].metric("Blasts", int(is_blast.sum()))
    cols[2].metric("Normal", int((~is_blast).sum()))
    cols[3].metric("Samples", len(set(groups)), help="Each sample (group) stays on one side of "
                   "the internal check.")  # fmt: skip
    st.caption(f"Samples with blasts: {len(set(groups[is_blast]))}; with normal cells: "
               f"{len(set(groups[~is_blast]))}. " + " ".join(table.notes))  # fmt: skip
    try:
        check_cells(is_blast, groups)
    except AdaptationError as error:
        st.warning(str(error))
        return False
    fewest = min(is_blast.sum(), (~is_blast).sum())
    head = len(is_blast) >= MIN_HEAD_CELLS and fewest >= MIN_HEAD_CELLS_PER_CLASS
    st.caption("Enough cells to try re-fitting the classifier head too." if head else
               f"The classifier head is re-fitted from {MIN_HEAD_CELLS} cells with "
               f"{MIN_HEAD_CELLS_PER_CLASS} of each class; with fewer, the calibration and the "
               "logits' offset only.")  # fmt: skip
    return True


def _run(base: str, name: str) -> None:
    picked = st.session_state[CELLS_KEY]
    bar = st.progress(0.0, text="Classifying the cells …")

    def report(event: dict) -> None:
        done, total = event["done"], max(event["total"], 1)
        bar.progress(done / total, text=f"Classified {done} of {total} cells; then fitting")

    try:
        folder = adapt_model(base, picked["table"].records, new_name=name.strip() or None,
                             user=auth.acting_user(),
                             min_head_cells=MIN_HEAD_CELLS, data_description=picked["words"],
                             progress=report)  # fmt: skip
    except (LeukemiaCoreError, OSError, ValueError) as error:
        bar.empty()
        st.error(f"Not adapted: {error}")
        return
    st.session_state[ADAPTED_KEY] = folder.name
    del st.session_state["adapt_name"]  # suggest the next free name from now on
    st.rerun()


def _result(name: str) -> None:
    """Before/after figures of the version made here, and its "Make active" button."""
    try:
        done = read_config(name).training["adapted"]
    except (LeukemiaCoreError, KeyError) as error:
        st.error(f"Model {name!r} cannot be shown: {error}")
        return
    check = done["check"]
    words = VARIANT_WORDS.get(done["variant"], done["variant"])
    st.markdown(f"**New version `{name}`** from `{done['base']}`: {words}.")
    frame = pd.DataFrame({what: {label: check[what][key] for key, label in FIGURES.items()}
                          for what in ("before", "after")}).T  # fmt: skip
    # One format (it showed 1 beside 0.889); a figure the check could not give is a dash.
    st.dataframe(frame.map(lambda v: "—" if v is None or v != v else f"{v:.3f}"))
    st.caption(f"Grouped internal check on the lab's cells: {check['cells']} cells of "
               f"{check['groups']} samples, {check['folds']} folds, each sample scored by a fit "
               f"without it. {done['decision']}. Confident misses: blasts below the review band, "
               "counted normal without review.")  # fmt: skip
    if check["groups"] < MIN_CHECK_SAMPLES:  # as promotion refuses fewer test groups
        st.warning(f"These figures rest on {check['groups']} samples ({check['cells']} cells): "
                   f"with fewer than {MIN_CHECK_SAMPLES} they vary too much to tell the versions "
                   "apart, so even a perfect score here is no evidence. Adapt with cells of more "
                   "samples (at least 200 cells of many samples) before relying on it.")  # fmt: skip
    worse = worse_than_before(check)
    if worse:
        st.warning(f"On the check, the new version does worse than `{done['base']}`: "
                   f"{'; '.join(worse)}. Keep the current model.")  # fmt: skip
    if active_model_name() == name:  # made active here: said here, not only at the page's top
        st.success(f"`{name}` is the active model: new analyses use it.",
                   icon=":material/published_with_changes:")  # fmt: skip
        return
    if refusals := activation_refusals(read_config(name).training):
        st.error(f"`{name}` cannot become the active model: {'; '.join(refusals)}. It stays "
                 "installed, and the current model stays active.")  # fmt: skip
        return
    confirmed = st.checkbox(f"I checked these figures; make `{name}` the model every new "
                            "analysis uses.", key="adapt_confirm")  # fmt: skip
    st.button("Make active", key="adapt_activate", disabled=not confirmed, on_click=activate,
              args=(name, "adapt_confirm"), icon=":material/published_with_changes:")  # fmt: skip


def adapt_section() -> None:
    """Pick a base model and this lab's signed cells, adapt, then (separately) make it active."""
    st.subheader("4. Adapt to this lab")
    st.caption("Re-fits the temperature, decision threshold and review band (and, when a grouped "
               "check on these cells says it helps, the logits' offset or, from "
               f"{MIN_HEAD_CELLS} cells, the classifier head) on this lab's own signed cells. "
               "The result is a new model version `<model>-site<k>`; the current model stays "
               "as it is and stays active until you make the new one active.")  # fmt: skip
    names = list_models()
    if not names:
        st.info("No model is installed to adapt.")
        return
    base = st.selectbox("Base model", names, key="adapt_base",
                        on_change=lambda: st.session_state.pop("adapt_name", None))  # fmt: skip
    source = st.radio("Cells", SOURCES, key="adapt_source", horizontal=True)
    path = ""
    if source == SOURCES[1] and not data_roots():
        st.info(NOT_CONFIGURED)
    elif source == SOURCES[1]:
        path = st.text_input("Folder or CSV manifest on the server (with a group column), "
                             "relative to a data root", key="adapt_path",
                             help="Only folders under the data roots the administrator set "
                                  "(LEUKEMIA_DATA_ROOTS) can be read.")  # fmt: skip
    if st.button("Count cells", key="adapt_count", icon=":material/fact_check:"):
        _gather(source, path)
    picked = st.session_state.get(CELLS_KEY)
    if picked:
        enough = _counts(picked["table"])
        if "adapt_name" not in st.session_state:
            st.session_state["adapt_name"] = next_site_name(base)
        st.text_input("New model folder", key="adapt_name",
                      help="A new folder; an existing one is never overwritten.")  # fmt: skip
        # Too few cells: the warning above says what is missing; the button would only repeat it.
        if st.button("Adapt", key="adapt_run", type="primary", icon=":material/tune:",
                     disabled=not enough):  # fmt: skip
            _run(base, st.session_state["adapt_name"])
    adapted = st.session_state.get(ADAPTED_KEY)
    if adapted:
        _result(adapted)
