"""The Retrain page's job list: live progress, results with charts, cancel and promote.

Jobs run in the worker process of ``train.job_worker``; these widgets only read their status
and files.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pandas as pd
import streamlit as st

from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.models.config import DOMAIN_FILE
from leukemia_core.models.folder import (
    active_model_name,
    list_models,
    models_dir,
    replaced_model_name,
)
from leukemia_core.store_rows import minute_text
from train import jobs
from train.compare_settings import MODELS_SUBDIR, SIZE_BASELINE, TABLE_FILE
from train.compare_tables import (
    promotion_concerns,
    promotion_refusals,
    size_baseline_not_beaten,
    test_groups,
    unmeasured_classes,
)
from train.data_roots import data_roots, shorten
from train.promote import MIN_REASON_CHARACTERS, promote, promotions_of, reason_is_enough
from ui import auth
from ui import comparison as view
from ui.common import flash


def shown(text: str) -> str:
    """``text`` with the server's folders (jobs and uploads, models, data roots) replaced by
    names relative to them, for messages on the page."""
    return shorten(text, (jobs.runs_dir(), models_dir(), *data_roots()))


def admin_details(text: str) -> None:
    """The full text, server paths and all, folded away for the administrator."""
    with st.expander("Details for the administrator"):
        st.code(text, language=None)


def _cancel(job_id: str) -> None:
    try:
        jobs.cancel_job(job_id, user=auth.acting_user())
    except LeukemiaCoreError as error:  # logged out, disabled, or no longer a model admin
        flash(str(error))


@st.fragment(run_every=2.0)
def live_status(job_id: str, shown_state: str) -> None:
    """Progress of one job, refreshed every 2 s while it is queued or running; when its state
    changes (queued -> running -> done/failed/cancelled) the whole page is drawn again, so the
    job list never shows a state the job has left."""
    status = jobs.job_status(job_id)
    if status.state_text != shown_state:  # "cancelling" too: the caption above must say so
        st.rerun()
    if status.state == jobs.QUEUED:
        position = jobs.queue_position(job_id, jobs.list_jobs())
        st.info(f"Queued: position {position}. One job trains at a time on this server.")
        jobs.ensure_worker()  # e.g. after a server restart
        st.button("Cancel job", key=f"cancel_queued_{job_id}", on_click=_cancel, args=(job_id,))
    elif status.state == jobs.RUNNING:
        event = status.event
        st.progress(
            min(status.overall, 1.0),
            text=f"Overall {100 * status.overall:.0f}% · {view.eta_text(status.eta_s)}",
        )
        if event.get("model"):
            st.progress(
                view.model_fraction(status.overall, event.get("model_index"),
                                    event.get("n_models")),
                text=f"Model {event.get('model_index')} of {event.get('n_models')}: "
                     f"{event.get('model')} · "
                     + (f"fold {event['fold']} of {event.get('n_folds')}" if event.get("fold")
                        else "preparing its cells"),
            )  # fmt: skip
        stage = event.get("stage") or "model"  # before the first event: the job is starting
        done, total = event.get("done", 0), event.get("total") or 1
        epoch = f"epoch {event['epoch']} of {event['epochs']}, " if "epochs" in event else ""
        st.progress(
            min(done / total, 1.0),
            text=f"{view.STAGE_NAMES.get(stage, stage)}: {epoch}{done} of {total}",
        )
        if status.curves:
            st.plotly_chart(view.curves_figure(status.curves), key=f"live_curves_{job_id}")
        if status.cancelling:
            st.warning("Cancelling: the job stops at its next step (after the batch it is "
                       "training, or once its data are loaded); nothing of it is kept.",
                       icon=":material/hourglass_top:")  # fmt: skip
        else:
            st.button("Cancel job", key=f"cancel_{job_id}", on_click=_cancel, args=(job_id,),
                      icon=":material/stop:")  # fmt: skip
    else:
        st.rerun()  # finished: redraw the whole page with the results


def _default_name(job_id: str) -> None:
    """Name the folder after the picked model and the job (a callback of the model picker)."""
    picked = st.session_state[f"promote_model_{job_id}"]
    base = name = f"{picked}-{job_id[:15]}"
    for n in itertools.count(2):  # a free name: promoting again must not replace unasked
        if not (models_dir() / name).exists():
            break
        name = f"{base}-{n}"
    st.session_state[f"promote_name_{job_id}"] = name


def _promote(job_id: str) -> None:
    architecture = st.session_state[f"promote_model_{job_id}"]
    name = st.session_state[f"promote_name_{job_id}"].strip()
    try:
        promote(jobs.runs_dir() / job_id, architecture, name, user=auth.acting_user(),
                despite=st.session_state.get(f"promote_despite_{job_id}_{architecture}", ""))  # fmt: skip
    except (LeukemiaCoreError, OSError, ValueError) as error:
        # beside the button (a message at the top of the page is out of sight down here)
        st.session_state[f"promote_error_{job_id}"] = f"Not promoted: {shown(str(error))}"
        return
    st.session_state["model"] = name  # the Analyze page's model picker
    st.session_state[f"promote_confirm_{job_id}"] = False
    _default_name(job_id)  # the next promotion gets a new folder unless renamed on purpose
    flash(f"{architecture} is now the active model `{name}`; the Analyze page uses it from now "
          "on.", "success")  # fmt: skip


def promoted_note(status: jobs.JobStatus) -> None:
    """What was promoted from this job and whether it is still the active model: it stays on
    the page (a message at the top of the page is out of sight down here, and gone at the next
    click)."""
    active = active_model_name()
    for name, architecture in promotions_of(status.folder):
        if name == active:
            st.success(f"`{architecture}` of this job was promoted as `{name}`, the active "
                       "model: every new analysis uses it.", icon=":material/check_circle:")  # fmt: skip
        elif replaced := replaced_model_name(name):
            st.info(f"An earlier promotion of `{architecture}` as `{replaced}` was replaced by "
                    f"a later one of that name (kept as `{name}`).")  # fmt: skip
        else:
            now = f"the active model is now `{active}`" if active else "no model is active"
            st.info(f"`{architecture}` of this job was promoted as `{name}`; {now}.")


def results_section(status: jobs.JobStatus) -> None:
    try:
        results = status.results()
    except (OSError, ValueError) as error:  # removed or cut short outside the app
        st.error(f"The results of this job cannot be read ({type(error).__name__}); run the "
                 "comparison again.")  # fmt: skip
        return
    rows = results["table"]
    beaten_by = size_baseline_not_beaten(results, results["best"] or "")
    best = (f"Best of the trained models by balanced accuracy: **{results['best']}**, though it "
            "does not beat the size-only baseline" if beaten_by and results["best"] else
            f"Best by balanced accuracy: **{results['best'] or 'none'}**")  # fmt: skip
    st.markdown(f"**{results['n_tested']} test cells** of {results['n_cells']}, split "
                f"{results['split']}; figures with 95% bootstrap intervals over groups. "
                f"{best}.")  # fmt: skip
    if beaten_by:
        st.warning(f"No model beats the size-only baseline (balanced accuracy {beaten_by[1]:.3f}): "
                   "they may have learned no more than cell size. Add labelled cells from "
                   "more subjects before promoting any of them.")  # fmt: skip
    groups = {r["model"]: test_groups(results, r["model"]) for r in rows}
    st.dataframe(view.table_frame(rows, groups), hide_index=True, width="stretch")
    st.caption(
        "McNemar p: exact test of each model against the best on the same test cells "
        "(cells of one subject are not independent: read it as indicative). The "
        f"`{SIZE_BASELINE}` row uses nothing but the cell's area in its crop: a model "
        "that does not beat it clearly may have learned only that blasts are larger."
    )
    st.download_button("Download the table (CSV)", (status.folder / TABLE_FILE).read_bytes(),
                       file_name=f"comparison-{status.job_id}.csv", mime="text/csv",
                       key=f"download_{status.job_id}")  # fmt: skip
    models = results["models"]
    charts = st.tabs(["ROC", "Reliability", "Confusion matrices", "Training curves",
                      "Per source"])  # fmt: skip
    charts[0].plotly_chart(view.roc_figure(models), key=f"roc_{status.job_id}")
    charts[1].plotly_chart(view.reliability_figure(models), key=f"rel_{status.job_id}")
    cols = charts[2].columns(3)
    for i, (name, values) in enumerate(models.items()):
        cols[i % 3].plotly_chart(view.confusion_figure(name, values["confusion"]),
                                 key=f"cm_{status.job_id}_{name}")  # fmt: skip
    curves = {name: values["history"] for name, values in models.items() if values["history"]}
    if curves:
        charts[3].plotly_chart(view.curves_figure(curves), key=f"curves_{status.job_id}")
    charts[4].dataframe(view.per_source_frame(models), hide_index=True, width="stretch")

    promotable = [
        r["model"]
        for r in rows
        if r["status"] == "done"
        and r["model"] != SIZE_BASELINE
        and (status.folder / MODELS_SUBDIR / r["model"] / "config.json").is_file()
    ]
    if not promotable:
        if results.get("protocol") == "leave_one_source_out":
            st.caption("Nothing to promote: each model of a leave-one-source-out run lacks the "
                       "source it was tested on. To promote one, compare again with the "
                       "grouped protocol.")  # fmt: skip
        return
    st.subheader("Promote a model")
    st.caption(
        "Writes a complete model folder (the previous one of that name is kept as "
        "<name>.previous) and makes it the active model of the Analyze page."
    )
    promoted_note(status)
    cols = st.columns(2)
    pick_key, name_key = f"promote_model_{status.job_id}", f"promote_name_{status.job_id}"
    if pick_key not in st.session_state:
        st.session_state[pick_key] = (
            results["best"] if results["best"] in promotable else promotable[0]
        )
        _default_name(status.job_id)
    cols[0].selectbox("Model", promotable, key=pick_key, on_change=_default_name,
                      args=(status.job_id,))  # fmt: skip
    cols[1].text_input("Model folder name", key=name_key,
                       help="Letters, digits, - and _; an existing folder of that name is kept "
                            "as <name>.previous.")  # fmt: skip
    picked = st.session_state[pick_key]
    despite = ""
    if refusals := promotion_refusals(results, picked):
        st.error(f"`{picked}` should not become the active model: " + "; ".join(refusals) + ". "
                 "Train on labelled cells from more subjects and compare again.")  # fmt: skip
        if unmeasured_classes(results, picked):  # no reason overrides it
            return
        despite = st.text_input(
            "To promote it all the same, your reason (kept in its model card and the model "
            "changes, with your name)", key=f"promote_despite_{status.job_id}_{picked}",
            placeholder=f"at least {MIN_REASON_CHARACTERS} characters",
        )  # fmt: skip
        if not reason_is_enough(despite):
            return
    staged = status.folder / MODELS_SUBDIR / picked
    concerns = promotion_concerns(results, picked,
                                  has_domain_reference=(staged / DOMAIN_FILE).is_file())  # fmt: skip
    if concerns:
        st.warning(f"Before promoting `{picked}`: " + "; ".join(concerns) + ".")
    name = str(st.session_state.get(name_key) or "").strip()
    if name and name in list_models():  # said before the click, not only in the field's help
        active = " (the active model)" if name == active_model_name() else ""
        st.warning(f"`{name}`{active} exists: promoting replaces it. Its current version is "
                   f"kept as `{name}.previous`, which step 5 can make active again; choose "
                   "another name to keep both as they are.")  # fmt: skip
    if status.data_notes:  # said at the check, hours ago perhaps: they hold for every model here
        st.warning("The dataset check said of these cells:\n\n"
                   + "\n".join(f"- {shown(note)}" for note in status.data_notes))  # fmt: skip
    confirmed = st.checkbox(f"I checked these figures; make `{picked}` the model every new "
                            "analysis uses.", key=f"promote_confirm_{status.job_id}")  # fmt: skip
    st.button("Promote", key=f"promote_{status.job_id}", type="primary", disabled=not confirmed,
              on_click=_promote, args=(status.job_id,))  # fmt: skip
    if error := st.session_state.pop(f"promote_error_{status.job_id}", None):
        st.error(error)


def failure_words(error: str) -> str:
    """The worker's ``"<ExceptionName>: <message>"`` as a lab admin reads it: the message, and
    for a dataset gone since it was checked, what to do (the class name and the traceback's
    path are under the administrator's details)."""
    name, _, message = error.partition(": ")
    if not message or not name.isidentifier():
        return shown(error)
    if name in ("DatasetNotFoundError", "FileNotFoundError"):
        message += (" The data was moved or deleted after it was checked: check it again in "
                    "step 1 and start a new job.")  # fmt: skip
    return shown(message)


def _jobs_overview(job_id: str) -> None:
    """This job's state and every job's (read again every 3 s while a job is queued or running,
    :func:`_live_jobs_overview`: the line said "running 1" for minutes after the jobs had
    finished while another job was picked)."""
    all_jobs = jobs.list_jobs()
    status = next((j for j in all_jobs if j.job_id == job_id), None)
    if status is None:
        return
    per_state = ", ".join(f"{s} {n}" for s, n in Counter(j.state_text for j in all_jobs).items())
    done = f" {status.message}" if status.state == jobs.DONE and status.message else ""
    st.caption(f"This job: **{status.state_text}**.{done} All jobs: {per_state}.")
    with st.expander(f"Every job ({len(all_jobs)})"):
        # The state first: at 800 px a long job name pushed it off the table's right edge.
        st.dataframe(pd.DataFrame([{
            "State": j.state_text, "Job": j.title or "custom",
            "Submitted (UTC)": minute_text(j.created),
            "Finished (UTC)": minute_text(j.finished) if j.finished else "—",
        } for j in all_jobs]), hide_index=True, width="stretch")  # fmt: skip


_live_jobs_overview = st.fragment(run_every=3.0)(_jobs_overview)


def jobs_section() -> None:
    st.subheader("3. Jobs")
    all_jobs = jobs.list_jobs()
    if not all_jobs:
        st.info("No comparison jobs yet.")
        return
    by_id = {j.job_id: j for j in all_jobs}
    if st.session_state.get("job") not in by_id:  # the running job, else the newest one that
        # was not cancelled: a job queued behind it, or one cancelled before it ran, must not
        # hide its progress or the results of the one before
        opened = next((j for j in all_jobs if j.state == jobs.RUNNING),
                      next((j for j in all_jobs if j.state != jobs.CANCELLED), all_jobs[0]))  # fmt: skip
        st.session_state["job"] = opened.job_id
    # The state is not in the picker's label: a closed picker kept showing the label it was
    # picked with ("queued" after the job had run or been cancelled); it is said below instead.
    # Named by what it trained on and when it was submitted; the id is in the settings below.
    job_id = st.selectbox("Job", list(by_id), key="job",
                          format_func=lambda i: f"{by_id[i].title or 'custom'} · "
                                                f"{minute_text(by_id[i].created)} UTC")  # fmt: skip
    status = by_id[job_id]
    # Read again every 3 s only while some job can still change its state.
    (_live_jobs_overview if any(j.active for j in all_jobs) else _jobs_overview)(job_id)
    with st.expander("Job settings and command"):
        st.caption(f"Job {job_id}")
        try:
            st.code(status.spec().command(status.folder), language="bash")
        except (OSError, ValueError, KeyError, TypeError) as error:  # the worker fails it too
            st.caption(f"The job's settings file cannot be read ({type(error).__name__}: "
                       f"{shown(str(error))}).")  # fmt: skip
    if status.active:
        live_status(job_id, status.state_text)
    elif status.state == jobs.DONE:
        results_section(status)
    elif status.state == jobs.FAILED:
        st.error(f"This job failed: {failure_words(status.error or '')}")
        # A worker that died leaves its last progress message ("Loading the data."): not news.
        if status.message and status.error != jobs.WORKER_GONE:
            st.caption(shown(status.message))
        admin_details(f"{status.error}\n{status.message}")
    else:
        st.info(status.message or "This job was cancelled.")
