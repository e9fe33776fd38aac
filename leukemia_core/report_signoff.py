"""The report's sign-off state, said the same way in every place: each printed page's margins,
the status line, the sign-off section and the warning for a record altered outside the app.
A signed, current and intact record is the one state shown in green."""

from __future__ import annotations

from leukemia_core.case_record import CaseRecord
from leukemia_core.counting import blast_percent_figure
from leukemia_core.report_cells import html_text as _e
from leukemia_core.store_rows import minute_text


def page_css(record: CaseRecord) -> str:
    """A4 pages whose margins repeat the sample, the version, the sign-off state, the patient
    and the page number, so that any one printed page says whose it is and whether it was
    signed. Kept to one line each (a margin box that wraps runs off the paper's edge): a long
    id loses its middle past 48 characters (ids of one series differ at their end)."""
    who = f"Sample {_cut(record.sample_id, 48)} · version {record.version}"
    patient = f"Patient {_cut(record.patient_id, 24)}" if record.patient_id else ""
    box = "font: 8.5pt system-ui, sans-serif; color: #333;"
    colour = "#0b6b2b" if signed_and_current(record) else "#b00020"
    return (
        "@page { size: A4; margin: 17mm 12mm 15mm;"
        f" @top-left {{ content: {_css_text(who)}; {box} }}"
        f" @top-right {{ content: {_css_text(_margin_state(record))}; {box} color: {colour};"
        " font-weight: 700; }"
        f" @bottom-left {{ content: {_css_text('Research use only — not for diagnosis')}; {box} }}"
        + (f" @bottom-center {{ content: {_css_text(patient)}; {box} }}" if patient else "")
        + f' @bottom-right {{ content: "Page " counter(page) " of " counter(pages); {box} }} }}'
    )


def _cut(text: str, length: int) -> str:
    """``text`` in at most ``length`` characters, its middle left out.

    >>> _cut("HOSP-2026-12-07-PATIENT-00042-SLIDE-B", 20)
    'HOSP-2026…42-SLIDE-B'
    """
    if len(text) <= length:
        return text
    end = (length - 1) // 2 + 1
    return text[: length - 1 - end] + "…" + text[-end:]


def _margin_state(record: CaseRecord) -> str:
    """The sign-off state in a few words for every page's margin (names and times are in the
    body); what makes the record unsafe to use comes first."""
    if record.altered:
        return "ALTERED OUTSIDE THE APP — do not use"
    if record.is_signed and record.superseded_by is not None:
        return f"SUPERSEDED by version {record.superseded_by.version}"
    if record.is_signed and record.first_signed_by:  # the lab's rule asked for two signers
        return (
            f"SIGNED by {_cut(record.first_signed_by, 14)} and {_cut(record.signed_by or '', 14)}"
        )
    if record.is_signed:
        return f"SIGNED by {_cut(record.signed_by or '', 24)}"
    if record.first_signed_by:
        return "NOT SIGNED YET — awaiting the second signer"
    return "NOT SIGNED — draft"


def _css_text(text: str) -> str:
    """``text`` as a CSS string; every character but letters, digits and spaces is escaped,
    so nothing typed into a sample id can end the string or the style sheet."""
    # An escape ends at its one space, which CSS consumes, so a space after it survives.
    return '"' + "".join(c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in text) + '"'


def signed_and_current(record: CaseRecord) -> bool:
    """Signed, not reopened since and intact: the one state the report shows in green."""
    return record.is_signed and record.superseded_by is None and not record.altered


def status_words(record: CaseRecord) -> str:
    altered = "ALTERED OUTSIDE THE APP; " if record.altered else ""
    amends = amends_words(record)
    return altered + _sign_off_words(record) + (f"; {amends}" if amends else "")


def amends_words(record: CaseRecord) -> str:
    """``AMENDS version 1 (signed by A at ...: 12 of 16 cells blasts, 75.0%)``: what a
    reopened version replaces, so a reader holding the earlier report sees the change."""
    old = record.amends
    if old is None or not old.is_signed:
        return ""
    signers = f"{old.first_signed_by} and {old.signed_by}" if old.first_signed_by else old.signed_by
    result = ("no cells counted" if old.blast_percent is None else
              f"{old.n_blasts} of {old.n_counted} cells blasts, "
              f"{blast_percent_figure(old.blast_percent)}%")  # fmt: skip
    said = (
        f"version {old.version} (signed by {signers} at {minute_text(old.signed_at)} UTC: {result})"
    )
    # a draft amends nothing yet: read as in force, "AMENDS" misled a reader of the draft
    return f"AMENDS {said}" if record.is_signed else f"WOULD AMEND {said} once signed"


def _sign_off_words(record: CaseRecord) -> str:
    if record.is_signed:
        signed = f"SIGNED by {record.signed_by} at {minute_text(record.signed_at)} UTC"
        if record.first_signed_by:  # the lab's rule asked for two signers
            signed = f"SIGNED by {record.first_signed_by} and {signed.removeprefix('SIGNED by ')}"
        newer = record.superseded_by
        if newer is None:
            return signed
        return (f"{signed}; SUPERSEDED by version {newer.version} "
                f"({minute_text(newer.created_at)} UTC)")  # fmt: skip
    if record.first_signed_by:
        return "NOT SIGNED YET — awaiting the second signer"
    return f"NOT SIGNED — draft, {_review_state(record)}"


def _review_state(record: CaseRecord) -> str:
    """How far the review of a draft has come (a reviewed draft read "not reviewed")."""
    left = record.n_unreviewed
    if left:
        return f"{left} cell{'s' * (left != 1)} not reviewed yet"
    return "every cell reviewed, not signed yet"


def sign_off_section(record: CaseRecord) -> str:
    first = ""
    if record.first_signed_by:
        first = (f" First signed by {_e(record.first_signed_by)} at "
                 f"{minute_words(record.first_signed_at)}; two signers were required.")  # fmt: skip
    warning = altered_box(record)
    if amends := amends_words(record):  # said with the signatures, as the first one is
        replaces = "replaces" if record.is_signed else "will replace"
        amended = f" This version {_e(amends)}: its result {replaces} that one."
    else:
        amended = ""
    if record.is_signed:
        text = (
            f"Signed by {_e(record.signed_by)} at {minute_words(record.signed_at)}.{first}{amended}"
        )
        newer = record.superseded_by
        if newer is None:
            css = "unsigned" if record.altered else "signed"
            return f'<h2>Sign-off</h2>{warning}<p class="{css}">{text}</p>'
        return (f'<h2>Sign-off</h2>{warning}<p class="unsigned">{text} SUPERSEDED: reopened as '
                f"version {newer.version} at {minute_words(newer.created_at)} by "
                f"{_e(newer.created_by or '—')}; this is not the current result.</p>")  # fmt: skip
    if first:  # an amended draft without a first signer is not "awaiting the second signer"
        return (f'<h2>Sign-off</h2>{warning}<p class="unsigned">NOT SIGNED YET — awaiting the '
                f"second signer.{first}{amended}</p>")  # fmt: skip
    return (f'<h2>Sign-off</h2>{warning}<p class="unsigned">NOT SIGNED — a draft: '
            f"{_review_state(record)}.{amended}</p>")  # fmt: skip


def altered_box(record: CaseRecord) -> str:
    """What the audit hash chain found changed outside the app, in a warning box (empty for an
    intact record): the counts below may not be what was reviewed and signed."""
    if not record.altered:
        return ""
    found = "".join(f"<li>{_e(text)}</li>" for text in record.altered)
    return ('<div class="domain"><p>This record was changed outside the app after it was '
            "written: its counts and labels may not be what was reviewed and signed. Do not "
            "rely on it; ask the lab's administrator to check the case database.</p>"
            f"<ul>{found}</ul></div>")  # fmt: skip


def minute_words(timestamp: str | None) -> str:
    """``2026-12-04T23:40:28.75+00:00`` as ``2026-12-04 23:40 UTC``."""
    return "—" if not timestamp else f"{_e(minute_text(timestamp))} UTC"
