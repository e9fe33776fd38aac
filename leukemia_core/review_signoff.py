"""Sign-off of a review: the report's details, signing (by one or two accounts), reopening.

Mixed into :class:`leukemia_core.review.Review`, as :mod:`leukemia_core.store_signoff` is into
the case store: each action checks the account's role, goes to the record, and reads it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leukemia_core.counting import blast_percent_figure, needs_second_signer
from leukemia_core.errors import ReviewError
from leukemia_core.roles import Permission, User, require
from leukemia_core.runtime import setting_number

if TYPE_CHECKING:
    from leukemia_core.store import CaseStore

SECOND_SIGNER_ENV_VAR = "LEUKEMIA_SECOND_SIGNER_AT_PERCENT"


class ReviewSignoff:
    """Details, sign and reopen on :class:`leukemia_core.review.Review` (mixed in)."""

    n_unreviewed: int  # from ReviewTallies, mixed into the same Review
    n_uncertain: int
    first_signed_by: str | None  # from Review

    @property
    def sign_blockers(self) -> str | None:
        """What stands before signing, in one sentence; None when nothing does."""
        n, u = self.n_unreviewed, self.n_uncertain
        unreviewed = f"{n} cell{'s have' if n != 1 else ' has'} not been reviewed yet"
        if n and u:
            return (f"Before signing: {unreviewed}, {u} of them still uncertain. On the Review "
                    "page, label each uncertain cell and relabel or accept the others.")  # fmt: skip
        if n:
            return f"Before signing: {unreviewed}: relabel each or accept its label on the Review page."
        if u:
            return (f"Before signing: {u} cell{'s are' if u != 1 else ' is'} still uncertain: "
                    "label each one on the Review page.")  # fmt: skip
        return None

    def what_signing_does(self, user: User) -> str:
        """What signing the case as ``user`` does now, in one sentence (with the lab's
        two-signer rule, ``$LEUKEMIA_SECOND_SIGNER_AT_PERCENT``)."""
        if not user.can(Permission.SIGN):
            if user.can(Permission.REVIEW):
                return f"Your account ({user.name}) may review but not sign: a signer signs."
            return f"Your account ({user.name}) may look at this case but not review or sign it."
        # The cells may have been reviewed by another account (a technician): the signer
        # answers for the result, not for having labelled each cell.
        frozen = ("confirms that every cell has been reviewed and that you checked the result; "
                  "the record is then frozen")  # fmt: skip
        if self.first_signed_by == user.name:
            return "You signed first: the record is frozen when another signer signs too."
        if self.first_signed_by:
            return f"Signing as {user.name}, the second signer, {frozen}."
        limit, percent = second_signer_at_percent(), self.count().percent
        if needs_second_signer(percent, limit):
            return (f"Signing as {user.name} is the first of two signatures: blasts are "
                    f"{blast_percent_figure(percent, (limit,))}%, at or above the lab's {limit:g}%, so another signer signs "
                    "too before the record is frozen.")  # fmt: skip
        return f"Signing as {user.name} {frozen}."

    def set_details(
        self, store: CaseStore, *, user: User, comment: str | None = None,
        patient_id: str | None = None, seen_token: int | None = None,
    ) -> bool:  # fmt: skip
        """Set the case's comment and/or patient id for the report, together; True when either
        changed (see :meth:`CaseStore.set_case_details`). ``seen_token`` is as in :meth:`sign`."""
        require(user, Permission.REVIEW)
        self._require_saved("the details are kept in it")
        try:
            rows = store.set_case_details(
                self.case_id, reviewer=user.name, comment=comment, patient_id=patient_id,
                expected_token=self.audit_token if seen_token is None else seen_token)  # fmt: skip
        finally:
            self.refresh(store)
        return bool(rows)

    def sign(
        self, store: CaseStore, *, user: User, seen_token: int | None = None,
        comment: str | None = None, patient_id: str | None = None,
    ) -> bool:  # fmt: skip
        """Sign the case; True when it is now signed and frozen.

        The signer signs what they saw: a case changed since ``seen_token`` (the audit token of
        the case as shown to them; default: as this review last read it) is refused with
        :class:`CaseChangedError`, and this review then shows the change. A ``comment`` or
        ``patient_id`` given is saved first, as part of the same signature.

        Where the lab asks for a second signer above a blast level
        (``$LEUKEMIA_SECOND_SIGNER_AT_PERCENT``, e.g. 5 or 20), a case at or above it needs the
        signatures of two accounts: the first is recorded and the case stays open (False).

        Raises:
            PermissionDeniedError: The account may not sign.
            ReviewError: Not saved.
            SignOffBlockedError: Cells are still uncertain.
            CaseChangedError: The case changed since ``seen_token``.
            CaseStoreError: Already signed, no reviewer name, or another refusal of the record.
        """
        require(user, Permission.SIGN)
        self._require_saved("the signature is recorded in it")
        expected = self.audit_token if seen_token is None else seen_token
        try:
            if comment is not None or patient_id is not None:
                rows = store.set_case_details(self.case_id, reviewer=user.name, comment=comment,
                                              patient_id=patient_id, expected_token=expected)  # fmt: skip
                expected = rows[-1] if rows else expected
            signed = store.sign_case(self.case_id, reviewer=user.name,
                                     second_signer_at_percent=second_signer_at_percent(),
                                     expected_token=expected)  # fmt: skip
        finally:
            self.refresh(store)
        return signed

    def reopen(self, store: CaseStore, *, user: User, reason: str = "") -> str:
        """Reopen a signed case as a new version, which becomes the one under review; the
        reason goes into the new version's audit trail."""
        require(user, Permission.SIGN)
        self._require_saved("reopening makes a new version of it")
        if not str(reason).strip():  # the rule is the workflow's, not the page's
            raise ReviewError("Say why you reopen it in the box above (it is kept in the audit "
                              "trail), then press the button again.")  # fmt: skip
        new_id = store.reopen_case(self.case_id, reviewer=user.name, reason=reason)
        self.case_id = new_id
        self._follow(store.case_state(new_id))
        return new_id


def second_signer_at_percent() -> float | None:
    """The lab's blast level (percent) from which two signers must sign; None when not asked."""
    try:
        return setting_number(SECOND_SIGNER_ENV_VAR, 0, 100, "a blast percentage")
    except ValueError as error:
        raise ReviewError(f"{error}; unset it to need one signer only.") from None
