"""Signing and reopening cases (mixed into :class:`~leukemia_core.store.CaseStore`).

A signed case is frozen; a lab may ask for two signers above a blast level (see
:meth:`CaseSignoff.sign_case`); reopening copies a signed case into a new open version.
"""

from __future__ import annotations

import uuid

from leukemia_core.case_record import STATUS_OPEN, STATUS_SIGNED
from leukemia_core.counting import blast_percent_figure, needs_second_signer
from leukemia_core.store_reads import case_rows
from leukemia_core.store_rows import (
    CaseInputError,
    CaseNotReopenableError,
    SignOffBlockedError,
    StorePart,
    audit,
    now,
    require_unchanged,
    reviewer_name,
    withdraw_first_signature,
)
from leukemia_core.types import NO_REVIEW_LABELS, CellLabel

MAX_COMMENT = 4000
MAX_PATIENT_ID = 64


NOTHING_COUNTED_NEEDS_COMMENT = (
    "Nothing in this case is counted (no cell is labelled blast or normal), so it has no blast "
    "percentage: write in the case's comment why (e.g. \"inadequate sample: no white cells in "
    'focus; new smear requested"), then sign; or add fields with countable cells.'
)


class CaseSignoff(StorePart):
    """Sign-off of the case database (mixed into :class:`~leukemia_core.store.CaseStore`)."""

    def sign_case(
        self, case_id: str, *, reviewer: str, second_signer_at_percent: float | None = None,
        expected_token: int | None = None,
    ) -> bool:  # fmt: skip
        """Signs the case; returns True when it is now signed and frozen.

        With ``expected_token`` (the case's last audit id when the signer read it) a case that
        changed since is refused (:class:`CaseChangedError`): a signer signs what they saw.
        With ``second_signer_at_percent`` (a lab's rule) a case whose blast percentage reaches
        it needs two signers: the first signature is recorded and the case stays open (False);
        another account's signature then freezes it. A relabel in between withdraws the first.

        Raises:
            CaseInputError: Empty reviewer name.
            CaseNotFoundError: No such case.
            CaseSignedError: Already signed.
            SignOffBlockedError: Cells are still uncertain or not reviewed (cells cut by the
                border, never counted, need no review), the second signer is the first, or
                nothing is counted and the comment does not say why.
        """
        reviewer = reviewer_name(reviewer)
        self._settle_outside_changes(case_id, expected_token)
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            require_unchanged(conn, case, expected_token, "signing")
            # A signature would make a change made outside the app a signed result, as a
            # reopened copy would (refused in reopen_case for the same reason).
            if altered := self._alterations(conn, case, *case_rows(conn, case["case_id"])):
                raise SignOffBlockedError(
                    f"Cannot sign case {case['case_id'][:8]}: it was changed outside the app after "
                    f"it was written ({altered[0]}). Ask the lab's administrator to restore the "
                    "case database from a backup taken before the change."
                )
            counts = dict(conn.execute(
                "SELECT label, COUNT(*) FROM cells WHERE case_id = ? GROUP BY label",
                (case["case_id"],),
            ).fetchall())  # fmt: skip
            n_uncertain = counts.get(CellLabel.UNCERTAIN.value, 0)
            if n_uncertain:
                cells = "cell is" if n_uncertain == 1 else "cells are"
                raise SignOffBlockedError(
                    f"Cannot sign case {case['case_id'][:8]}: {n_uncertain} {cells} still "
                    "labelled uncertain; they must be reviewed first (label each one blast, "
                    "normal or not a white cell, or exclude it, on the Review page)."
                )
            (n_unreviewed,) = conn.execute(
                "SELECT COUNT(*) FROM cells WHERE case_id = ? AND reviewed = 0 "
                f"AND label NOT IN ({', '.join('?' * len(NO_REVIEW_LABELS))})",
                (case["case_id"], *sorted(label.value for label in NO_REVIEW_LABELS)),
            ).fetchone()
            if n_unreviewed:
                cells = "cell has" if n_unreviewed == 1 else "cells have"
                raise SignOffBlockedError(
                    f"Cannot sign case {case['case_id'][:8]}: {n_unreviewed} {cells} not been "
                    "reviewed yet; relabel each or accept the model's call for it (Review page)."
                )
            blasts, counted = (
                counts.get("blast", 0),
                counts.get("blast", 0) + counts.get("normal", 0),
            )
            if not counted and not case["comment"].strip():
                raise SignOffBlockedError(NOTHING_COUNTED_NEEDS_COMMENT)
            percent = 100.0 * blasts / counted if counted else None
            limits = () if second_signer_at_percent is None else (second_signer_at_percent,)
            shown = "—" if percent is None else blast_percent_figure(percent, limits)
            at = now()
            if needs_second_signer(percent, second_signer_at_percent):
                first = case["first_signed_by"]
                if first is None:
                    conn.execute("UPDATE cases SET first_signed_by = ?, first_signed_at = ? "
                                 "WHERE case_id = ?", (reviewer, at, case["case_id"]))  # fmt: skip
                    audit(conn, case, "first signature", reviewer,
                           f"blasts {shown}% >= {second_signer_at_percent:g}%: a second "
                           "signer must sign too")  # fmt: skip
                    return False
                if first == reviewer:
                    raise SignOffBlockedError(
                        f"{reviewer} signed this case first; blasts are {shown}% (at or "
                        f"above {second_signer_at_percent:g}%), so another signer must sign it."
                    )
            conn.execute(
                "UPDATE cases SET status = ?, signed_by = ?, signed_at = ? WHERE case_id = ?",
                (STATUS_SIGNED, reviewer, at, case["case_id"]),
            )
            audit(
                conn,
                case,
                "signed",
                reviewer,
                (f"blasts {shown}% of {counted} cells" if counted else "no cells counted")
                + "; record frozen",
            )
        return True

    def set_case_details(
        self, case_id: str, *, reviewer: str, comment: str | None = None,
        patient_id: str | None = None, expected_token: int | None = None,
    ) -> list[int]:  # fmt: skip
        """Set the case's free-text comment and/or optional patient id (both shown in the report)
        in one transaction, one audit row per detail that changed; returns their ids. A change
        withdraws a first signature (a second signer signs what the first one saw);
        ``expected_token`` refuses a case changed since it was read, as in :meth:`sign_case`.

        Raises:
            CaseInputError: A comment over :data:`MAX_COMMENT` characters, or a patient id that
                is not one line of at most :data:`MAX_PATIENT_ID` printable characters.
            CaseSignedError: The case is signed.
        """
        reviewer = reviewer_name(reviewer)
        new = {}
        if comment is not None:
            new["comment"] = str(comment).strip()
            if len(new["comment"]) > MAX_COMMENT:
                raise CaseInputError(f"The comment has {len(new['comment'])} characters; keep it "
                                     f"under {MAX_COMMENT}.")  # fmt: skip
        if patient_id is not None:
            new["patient_id"] = value = str(patient_id).strip()
            if len(value) > MAX_PATIENT_ID or not value.isprintable():
                raise CaseInputError(
                    f"The patient id {value[:80]!r} is not one line of at most {MAX_PATIENT_ID} "
                    "printable characters; enter the identifier your laboratory uses (or leave "
                    "it empty)."
                )
        rows = []
        self._settle_outside_changes(case_id, expected_token)
        with self._transaction(write=True) as conn:
            case = self._case(conn, case_id, open_only=True)
            require_unchanged(conn, case, expected_token, "saving the details")
            for column, value in new.items():
                if case[column] == value:
                    continue
                conn.execute(f"UPDATE cases SET {column} = ? WHERE case_id = ?",
                             (value, case["case_id"]))  # fmt: skip
                if column == "comment":
                    rows.append(audit(conn, case, "comment", reviewer, value))  # all of it
                else:
                    note = f"{case[column] or 'none'} -> {value or 'none'}"
                    rows.append(audit(conn, case, "patient id", reviewer, note))
            if rows:
                rows += withdraw_first_signature(conn, case, reviewer,
                                                 "by the change of the report's details")  # fmt: skip
        return rows

    def reopen_case(self, case_id: str, *, reviewer: str, reason: str = "") -> str:
        """Copies a signed case into a new open version (same sample, version + 1).

        The new version keeps each cell's model label and current label; the signed original
        stays unchanged (:attr:`CaseRecord.superseded_by` then names the new version). The
        reason, when given, is in the new version's audit trail.

        Returns:
            The id of the new version.

        Raises:
            CaseInputError: Empty reviewer name.
            CaseNotFoundError: No such case.
            CaseNotReopenableError: The case is not signed, was already reopened, or was
                changed outside the app.
        """
        reviewer = reviewer_name(reviewer)
        new_id = uuid.uuid4().hex
        with self._transaction(write=True) as conn:
            old = self._case(conn, case_id, open_only=False)
            if old["status"] != STATUS_SIGNED:
                raise CaseNotReopenableError(
                    f"Case {old['case_id']} is not signed, so it can still be changed as it "
                    "is; only signed cases are reopened."
                )
            child = conn.execute(
                "SELECT case_id, version FROM cases WHERE parent_id = ?", (old["case_id"],)
            ).fetchone()
            if child is not None:
                raise CaseNotReopenableError(
                    f"Case {old['case_id']} was already reopened as {child['case_id']} (version "
                    f"{child['version']}); open the latest version instead."
                )
            # A copy of a record changed outside the app would start a clean audit trail: the
            # change would pass for reviewed, and be signed and exported as training data.
            altered = self._alterations(conn, old, *case_rows(conn, old["case_id"]))
            if altered:
                raise CaseNotReopenableError(
                    f"Case {old['case_id'][:8]} (sample {old['sample_id']!r}) was changed outside "
                    f"the app after it was written ({altered[0]}), so it is not reopened: a new "
                    "version would carry that change as if it had been reviewed. Ask the lab's "
                    "administrator to restore the case database from a backup taken before the "
                    "change."
                )
            conn.execute(
                "INSERT INTO cases (case_id, version, parent_id, sample_id, status, created_at, "
                "created_by, model_name, model_checksum, thresholds, domain, comment, patient_id, "
                "fields_sha256) "
                "SELECT ?, version + 1, case_id, sample_id, ?, ?, ?, model_name, model_checksum, "
                "thresholds, domain, comment, patient_id, fields_sha256 "
                "FROM cases WHERE case_id = ?",
                (new_id, STATUS_OPEN, now(), reviewer, old["case_id"]),
            )
            for table in ("fields", "cells"):
                columns = [r["name"] for r in conn.execute(f"PRAGMA table_info({table})")][1:]
                names = ", ".join(columns)
                conn.execute(
                    f"INSERT INTO {table} (case_id, {names}) SELECT ?, {names} FROM {table} "
                    "WHERE case_id = ?",
                    (new_id, old["case_id"]),
                )
            new = self._case(conn, new_id, open_only=True)
            # The reason first: a table column showed the 32-character id and cut the reason.
            # The full id of the version it came from is the case's parent_id.
            came_from = f"reopened from version {old['version']} (case {old['case_id'][:8]})"
            note = f"{reason.strip()[:500]} ({came_from})" if reason.strip() else came_from
            audit(conn, new, "reopened", reviewer, note)
        return new_id
