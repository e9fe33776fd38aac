"""Retrain & compare: pick labelled cells, compare architectures in the background, promote one.

Training runs in a separate worker process (``train.jobs``): this page only queues jobs, shows
their progress and results, and promotes a model. Research use only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import streamlit as st

from leukemia_core.accounts import Permission
from leukemia_core.calibration import THRESHOLD_RULES
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models import list_architectures
from leukemia_core.models.config import TEST_TIME_VIEWS
from leukemia_core.models.folder import list_models
from leukemia_core.models.inputs import STAIN_NORMALISATIONS
from train import jobs
from train.archives import extract_zip
from train.augmentation import ALL_AUGMENTATIONS
from train.batches import BALANCING
from train.compare import planned_splits
from train.compare_settings import (
    MISSING_WEIGHTS,
    PRESETS,
    PROTOCOLS,
    CompareSettings,
)
from train.data_roots import NOT_CONFIGURED, data_roots, resolve_under_roots
from train.inspection import DatasetSource, inspect_datasets
from train.records import BLAST, NO_LABEL, NORMAL, UnknownClassFolderError, default_label
from train.reviewed_cases import export_reviewed_cases
from ui import auth, retrain_jobs, state
from ui.adaptation import adapt_section
from ui.common import flash, show_flashes
from ui.comparison import BALANCING_WORDS, MISSING_WEIGHTS_WORDS, STAIN_WORDS, THRESHOLD_WORDS
from ui.models import active_model_section

SETTING_WIDTH_PX = 170  # one setting's box: five to a row at 1440 px, two at 800 px
DATASET_KEY = "retrain_dataset"  # {"locations": [...], "options": {...}, "summary": ...}
LABELS_KEY = "retrain_class_labels"  # a dataset waiting for its class folders' labels
GIVEN_LABELS_KEY = "retrain_given_labels"  # folder -> the label chosen for it last
CUSTOM = "custom"
SETTING_KEYS = ("input_size", "epochs", "batch_size", "fine_tune_epochs", "fine_tune_layers",
                "augment", "augmentations", "balance", "cached_features", "feature_views",
                "test_time_views", "patience", "folds", "seed", "missing_weights", "protocol",
                "stain_normalisation", "threshold_rule")  # fmt: skip
SOURCES = ("Folder on this server", "Upload a zip", "Reviewed cases")
FOLD_CHOICES = (1, *range(3, 11))


def _apply_preset() -> None:
    """Fill the settings widgets from the chosen preset (a callback: runs before the widgets)."""
    name = st.session_state["preset"]
    if name == CUSTOM:
        return
    st.session_state.update(_widget_values(CompareSettings.from_preset(name)))


def _widget_values(settings: CompareSettings) -> dict:
    """The settings widgets' values for ``settings`` (lists where the settings hold tuples)."""
    values = {key: getattr(settings, key) for key in ("architectures", *SETTING_KEYS)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _to_custom() -> None:
    """A setting changed by hand: the preset box says Custom, as the job's title will."""
    st.session_state["preset"] = CUSTOM


KEPT_KEY = "retrain_settings_kept"
KEPT_WIDGETS = (
    "preset",
    "architectures",
    *SETTING_KEYS,
    "data_source",
    "data_paths",
    "allow_ungrouped",
    "skip_unreadable",
)  # as the dataset checked with them


def _defaults() -> None:
    """The settings of this tab's last visit (Streamlit forgets the widgets of a page left for
    another), else the quick CPU preset."""
    if "preset" not in st.session_state:
        kept = st.session_state.get(KEPT_KEY)
        if kept:
            st.session_state.update(kept)
        else:
            st.session_state["preset"] = "quick_cpu"
            _apply_preset()
    # A click before the page's first run ended cut that run short: Streamlit dropped the
    # values of the widgets it had not drawn yet, and they came back at their minimums (input
    # 32 px, 1 epoch, no augmentation) under a preset box still naming the preset. Each one
    # missing is taken from this tab's kept settings, else from the preset.
    missing = [key for key in ("architectures", *SETTING_KEYS) if key not in st.session_state]
    if missing:
        preset = st.session_state["preset"]
        settings = CompareSettings.from_preset("quick_cpu" if preset == CUSTOM else preset)
        from_preset, kept = _widget_values(settings), st.session_state.get(KEPT_KEY) or {}
        st.session_state.update({key: kept.get(key, from_preset[key]) for key in missing})


def _keep() -> None:
    st.session_state[KEPT_KEY] = {
        key: st.session_state[key] for key in KEPT_WIDGETS if key in st.session_state
    }


def _inspect(locations: list[str], options: dict, roots: tuple | None = None) -> None:
    """Check the picked locations; typed server paths (``roots`` given) only under the roots.
    ``options``: ``allow_ungrouped``, ``skip_unreadable`` and ``class_labels`` of
    :func:`inspect_datasets`."""
    try:
        if roots is not None:  # the job's worker reads exactly the folders checked here
            locations = [str(resolve_under_roots(x, roots)) for x in locations]
        with st.spinner("Reading and checking every image …"):
            table, summary = inspect_datasets([DatasetSource(x) for x in locations],
                                              roots=roots, **options)  # fmt: skip
    except UnknownClassFolderError as error:  # the labels are asked for below
        st.session_state.pop(DATASET_KEY, None)
        st.session_state[LABELS_KEY] = {"locations": locations, "options": options,
                                        "roots": roots, "folders": error.folders,
                                        "unknown": error.unknown, "dataset": error.dataset}  # fmt: skip
        return
    except (LeukemiaCoreError, OSError) as error:
        st.session_state.pop(DATASET_KEY, None)
        if "class_labels" not in options:  # else the labels stay on show, to be changed
            st.session_state.pop(LABELS_KEY, None)
        st.error(f"This dataset cannot be used: {error}")
        return
    st.session_state.pop(LABELS_KEY, None)
    st.session_state[DATASET_KEY] = {"locations": locations, "options": options,
                                     "summary": summary, "records": table.records}  # fmt: skip


LABEL_CHOICES = {BLAST: "Blasts", NORMAL: "Normal cells", NO_LABEL: "Leave out"}


def _class_labels_form(options: dict) -> None:
    """Ask what each class folder holds when some folder names say neither (e.g. ``Pre``,
    ``Benign``), then check the dataset again with those labels and today's ``options``."""
    pending = st.session_state.get(LABELS_KEY)
    if not pending:
        return
    where = f" of **{pending['dataset']}**" if pending.get("dataset") else ""
    st.warning(f"The names of these class folders{where} do not say whether they hold blasts or "
               f"normal cells: {', '.join(pending['unknown'])}. Say what each folder holds; the "
               "labels go with the job and its command line.", icon=":material/label:")  # fmt: skip
    given = st.session_state.get(GIVEN_LABELS_KEY, {})  # this tab's earlier answers
    with st.form("class_labels_form", border=False):
        row = st.container(horizontal=True, wrap=True, gap="small")
        for name in pending["folders"]:
            implied = given.get(name) if name in pending["unknown"] else (
                default_label(name) or NO_LABEL)  # fmt: skip
            row.selectbox(name, list(LABEL_CHOICES), format_func=LABEL_CHOICES.get,
                          index=None if implied is None else list(LABEL_CHOICES).index(implied),
                          placeholder="Choose", key=f"class_label_{name}",
                          width=SETTING_WIDTH_PX)  # fmt: skip
        submitted = st.form_submit_button("Check with these labels", type="primary")
    if not submitted:
        return
    chosen = {name: st.session_state[f"class_label_{name}"] for name in pending["folders"]}
    unset = [name for name, label in chosen.items() if label is None]
    if unset:
        st.error(f"Choose what each folder holds first: {', '.join(unset)}.")
        return
    # With several locations each may ask in turn: the labels given before stay.
    st.session_state[GIVEN_LABELS_KEY] = {**given, **chosen}  # offered again on a new check
    labels = {**pending["options"].get("class_labels", {}),
              **{name: None if label == NO_LABEL else label for name, label in chosen.items()}}  # fmt: skip
    _inspect(pending["locations"], {**options, "class_labels": labels}, pending["roots"])
    asked_again = st.session_state.get(LABELS_KEY) not in (None, pending)  # another dataset
    if DATASET_KEY in st.session_state or asked_again:
        st.rerun()  # draw the page again: without the question, or with the new one


def _server_folders(options: dict) -> None:
    """Typed dataset paths, read only under the data roots (none configured: say how)."""
    roots = data_roots()
    if not roots:
        st.info(NOT_CONFIGURED)
        return
    text = st.text_area(
        "Dataset folders or CSV manifests on the server, one per line, relative to a data root",
        key="data_paths",
        help="Only folders under the data roots the administrator set (LEUKEMIA_DATA_ROOTS) "
             "can be read. C-NMC 2019 layout (training_data/fold_k/{all,hem}), ALL-IDB2, class "
             "folders (<class>/[<subject>/]image) or a CSV manifest (path,label,group).",
    )  # fmt: skip
    if st.button("Check dataset", key="inspect", icon=":material/fact_check:"):
        locations = [line.strip() for line in text.splitlines() if line.strip()]
        if not locations:
            st.error("Type the path of a dataset folder or manifest first.")
        else:
            _inspect(locations, options, roots)


def dataset_section() -> dict | None:
    st.subheader("1. Labelled cells")
    # Without data roots the server's folders cannot be read: open on the upload instead.
    source = st.radio("Where are the cells?", SOURCES, key="data_source", horizontal=True,
                      index=0 if data_roots() else SOURCES.index("Upload a zip"))  # fmt: skip
    allow = st.checkbox(
        "Allow cells without subject or field ids", key="allow_ungrouped",
        help="Then each file is its own group, cells of one donor can be on both sides of the "
             "split, and the scores will be optimistic. Prefer <class>/<subject>/ folders or a "
             "manifest with a group column.",
    )  # fmt: skip
    skip = st.checkbox(
        "Leave out images that cannot be read", key="skip_unreadable",
        help="Damaged or truncated files are listed under the summary and left out of "
             "training and testing, instead of stopping the check.",
    )  # fmt: skip
    options = {"allow_ungrouped": allow, "skip_unreadable": skip}
    if source == SOURCES[0]:
        _server_folders(options)
    elif source == SOURCES[1]:
        upload = st.file_uploader("Zip of a dataset folder", type=["zip"], key="data_zip",
                                  help="Up to the server's upload limit; larger sets: copy them "
                                       "to the server and pick the folder.")  # fmt: skip
        if upload is not None and st.button("Unpack and check", key="unpack"):
            uploads = jobs.runs_dir() / "uploads"
            try:
                folder = extract_zip(upload, uploads)
            except (LeukemiaCoreError, OSError) as error:
                st.session_state.pop(DATASET_KEY, None)  # Start must not use the set before
                st.error(f"The zip was not unpacked: {retrain_jobs.shown(str(error))}")
            else:  # named relative to the uploads folder, like server folders to their root
                _inspect([str(folder)], options, (uploads,))
    else:
        st.caption("Cells of signed cases, with the labels the reviewer confirmed or corrected; "
                   "one patient's samples are one group (a sample without a patient id is its "
                   "own).")  # fmt: skip
        if st.button("Use reviewed cases", key="use_reviewed"):
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            out = jobs.runs_dir() / "datasets" / f"reviewed-{stamp}"
            try:
                export_reviewed_cases(state.case_store(), out)
            except (LeukemiaCoreError, OSError) as error:
                st.session_state.pop(DATASET_KEY, None)  # Start must not use the set before
                st.error(retrain_jobs.shown(str(error)))
            else:
                _inspect([str(out / "manifest.csv")], options, (out.parent,))
    _class_labels_form(options)
    picked = st.session_state.get(DATASET_KEY)
    if picked:
        summary = picked["summary"]
        cols = st.columns(4)
        cols[0].metric("Cells", summary.n_cells)
        cols[1].metric("Blasts", summary.per_class.get("blast", 0))
        cols[2].metric("Normal", summary.per_class.get("normal", 0))
        cols[3].metric("Groups", summary.n_groups, help="Subjects, fields or samples; a split "
                       "keeps each group on one side.")  # fmt: skip
        st.caption(f"{summary.location} · layout {summary.format} · sources: "
                   + ", ".join(f"{k} {v}" for k, v in summary.per_source.items()))  # fmt: skip
        for note in summary.notes:
            st.info(note)
        if summary.n_groups < 2 or len([n for n in summary.per_class.values() if n]) < 2:
            # said here, at the check: the refusal beside Start sat a screen further down
            st.warning("No comparison can run on these cells: a model is tested on subjects it "
                       "never saw, which needs cells of both classes from at least two subjects "
                       "(groups). Add labelled cells of more subjects.")  # fmt: skip
        with st.expander(f"Cells per group ({summary.n_groups})"):
            st.dataframe(summary.group_frame(), hide_index=True, width="stretch")
    return picked


def settings_section(picked: dict | None) -> None:
    st.subheader("2. Models and training")
    names = {CUSTOM: "Custom", **{k: p.title for k, p in PRESETS.items()}}
    preset = st.selectbox("Preset", list(names), key="preset", format_func=names.get,
                          on_change=_apply_preset)  # fmt: skip
    if preset != CUSTOM:
        left_out = PRESETS[preset].runnable()[1]
        st.caption(PRESETS[preset].description + (
            f" Left out, as their ImageNet weights are not on this server: {', '.join(left_out)} "
            "(put their files in the Keras cache, `$KERAS_HOME/models/`, to run them)."
            if left_out else ""))  # fmt: skip
    architectures = st.multiselect("Architectures", list_architectures(), key="architectures",
                                   on_change=_to_custom)  # fmt: skip
    # One row that wraps: on a narrow screen the boxes move down instead of cutting their words.
    row = st.container(horizontal=True, wrap=True, gap="small", vertical_alignment="bottom")
    box = {"width": SETTING_WIDTH_PX, "on_change": _to_custom}
    row.number_input("Input size (px)", 32, 600, key="input_size", **box)
    row.number_input("Epochs", 1, 200, key="epochs", **box)
    row.number_input("Batch size", 1, 512, key="batch_size", **box)
    # Only the counts a split can have: 2 folds leave no part to validate on.
    row.selectbox("Grouped folds", FOLD_CHOICES, key="folds", **box,
                  help="1: one 70/10/20 split of groups per source; k ≥ 3: every cell is "
                       "tested once (test one part, validate on the next).")  # fmt: skip
    row.number_input("Fine-tune epochs", 0, 100, key="fine_tune_epochs", **box)
    row.number_input("Layers fine-tuned", 1, 500, key="fine_tune_layers", **box,
                     help="How many layers from the top of the backbone the fine-tune epochs "
                          "train (with fine-tune epochs above 0).")  # fmt: skip
    row.number_input("Feature views", 1, 16, key="feature_views", **box,
                     help="Augmented views per cell in cached-feature mode.")  # fmt: skip
    row.number_input("Early-stopping patience", 1, 1000, key="patience", **box)
    row.number_input("Seed", 0, 2**31 - 1, key="seed", **box)
    row.selectbox("Balancing", BALANCING, key="balance", **box, format_func=BALANCING_WORDS.get,
                  help="How training evens out rare classes. Oversample: the rarer class "
                       "more often; even per source: every source's blasts and normal cells "
                       "equally often, which keeps a source from being one class in effect; "
                       "class weights: the rarer class's errors count more.")  # fmt: skip
    row.selectbox("Without ImageNet weights offline", MISSING_WEIGHTS, key="missing_weights",
                  **box, format_func=MISSING_WEIGHTS_WORDS.get,
                  help="Skip: the architecture's row says why; random: it trains from random "
                       "weights, which its row says (a floor, not its real result).")  # fmt: skip
    row.selectbox("Test-time views", TEST_TIME_VIEWS, key="test_time_views", **box,
                  help="Each cell is classified as it is (1), in its 4 quarter turns (4) or "
                       "also their mirror images (8); the logits are averaged. More views: "
                       "steadier answers, proportionally slower classification.")  # fmt: skip
    row = st.container(horizontal=True, wrap=True, gap="medium")
    row.checkbox("Augmentation", key="augment", on_change=_to_custom)
    row.checkbox("Cached features (frozen, fast)", key="cached_features", on_change=_to_custom)
    st.multiselect("Augmentations", ALL_AUGMENTATIONS, key="augmentations", on_change=_to_custom,
                   disabled=not st.session_state["augment"],
                   help="hflip/vflip: flips; rotate90: quarter turns; scale: ±10%; colour: "
                        "mild brightness, contrast, hue and saturation jitter; stain: strong "
                        "stain (HED) and colour jitter, as between labs; blur: defocus and "
                        "lower resolution; jpeg: compression artefacts.")  # fmt: skip
    cols = st.columns(3)
    cols[0].selectbox("Evaluation protocol", PROTOCOLS, key="protocol", on_change=_to_custom,
                      format_func=lambda p: {"grouped": "Grouped",
                                             "leave_one_source_out": "Leave one source out"}[p],
                      help="Grouped: every source on every side. Leave one source out tests each "
                           "dataset with models that never saw "
                           "it: how a new lab's cells are met. Choose recipes by it; its "
                           "models are not promotable (each lacks one source).")  # fmt: skip
    cols[1].selectbox("Stain normalisation", list(STAIN_NORMALISATIONS),
                      key="stain_normalisation", format_func=STAIN_WORDS.get, on_change=_to_custom,
                      help="None; grey: brightness only, no colour; the cell's colours mapped "
                           "to a reference (Reinhard, on the cell pixels).")  # fmt: skip
    cols[2].selectbox("Threshold rule", list(THRESHOLD_RULES), key="threshold_rule",
                      on_change=_to_custom,
                      format_func=THRESHOLD_WORDS.get,
                      help="Blasts first: the threshold keeps blast sensitivity >= 0.95 on the "
                           "validation cells of every source with blasts; balanced accuracy: "
                           "the older rule.")  # fmt: skip
    try:
        settings = CompareSettings(architectures=tuple(architectures), **{
            k: st.session_state[k] for k in SETTING_KEYS})  # fmt: skip
    except (LeukemiaCoreError, ValueError) as error:
        st.warning(str(error))
        return
    if skipped := settings.skipped_here():
        words = (f"{', '.join(skipped)}: their ImageNet weights are not on this server (put "
                 "the files in the Keras cache, `$KERAS_HOME/models/`, or choose 'random' under "
                 "'Without ImageNet weights offline').")  # fmt: skip
        if len(skipped) == len(settings.architectures):
            st.error(f"None of the chosen architectures can run here: {words}")
            return
        st.warning(f"Skipped when the job runs: {words}")
    if picked is None:
        st.info("Check a dataset first (step 1).")
        return
    # tells jobs apart: a folder's name, or a manifest's folder ("reviewed-<time>")
    data_names = ", ".join((p.parent if p.suffix else p).name
                           for p in map(Path, picked["locations"]))  # fmt: skip
    title = settings.title(preset if preset != CUSTOM else None)
    n = len(settings.architectures)
    spec = jobs.JobSpec(tuple(picked["locations"]), settings, **picked["options"],
                        title=f"{title} ({settings.protocol_words()}, {n} model{'s' * (n > 1)}) "
                              f"on {data_names}", checked=jobs.data_counts(picked["summary"]))  # fmt: skip
    with st.expander("Equivalent command"):
        st.code(spec.command(jobs.runs_dir() / "<job id>"), language="bash")
    try:  # the job's own splits, made now: what cannot run is refused before it is queued
        planned_splits(picked["records"], settings)
        problem = None
    except (LeukemiaCoreError, ValueError) as error:
        problem = str(error)
        st.error(f"This comparison cannot run on these cells: {problem}")
    if st.button("Start comparison", key="start", type="primary", icon=":material/play_arrow:",
                 disabled=problem is not None):  # fmt: skip
        try:  # the account as it is now: an admin may have changed it since the page was drawn
            job_id = jobs.submit(spec, user=auth.acting_user())
        except LeukemiaCoreError as error:
            st.error(str(error))
        else:
            jobs.ensure_worker()
            st.session_state["job"] = job_id
            # named as the job list names it (its id is in the job's settings, below)
            flash(f"Job \"{spec.title or 'custom'}\" queued; it runs in the background, even "
                  "if you leave this page (step 3 shows it).", "success")  # fmt: skip
            st.rerun()


auth.require(Permission.MANAGE_MODELS)
st.title("Retrain & compare models")
st.caption("Train several architectures on your labelled cells with subject-level (grouped) "
           "splits, compare them with intervals, and promote one. Research use only: a "
           "promoted model still needs a reviewer for every cell.")  # fmt: skip
show_flashes()
_defaults()
jobs.ensure_worker()  # queued jobs need a worker, e.g. after a server restart
st.caption(f"Installed models: {', '.join(list_models()) or 'none'}")
picked = dataset_section()
settings_section(picked)
_keep()
retrain_jobs.jobs_section()
adapt_section()
active_model_section()
