"""The state machine of one campaign contact, and of one attempt to call it.

::

    pending --claim--> dialing --outcome--> completed | busy | no_answer | failed
       ^                  |                     (final: exactly one per contact)
       +--- retry (policy: attempts left, backoff) ---+
    pending --cancel--> canceled

An attempt number is given at the claim; the store's unique (contact, attempt) key
makes the claim itself the idempotency check, so a contact is never dialed twice for
one attempt, whichever worker claims it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from voxtra.platform.scheduling.errors import InvalidTransition
from voxtra.platform.scheduling.retry import RetryPolicy

__all__ = ["FINAL_STATES", "AttemptOutcome", "ContactState", "ContactStatus"]


class ContactState(StrEnum):
    PENDING = "pending"
    DIALING = "dialing"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = frozenset(
    {
        ContactState.COMPLETED,
        ContactState.BUSY,
        ContactState.NO_ANSWER,
        ContactState.FAILED,
        ContactState.CANCELED,
    }
)


class AttemptOutcome(StrEnum):
    """How one attempt ended."""

    COMPLETED = "completed"  # answered, and the call has ended
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    LOST = "lost"  # the worker holding it died; whether it rang is unknown
    CANCELED = "canceled"


_FINAL_FOR = {
    AttemptOutcome.COMPLETED: ContactState.COMPLETED,
    AttemptOutcome.BUSY: ContactState.BUSY,
    AttemptOutcome.NO_ANSWER: ContactState.NO_ANSWER,
    AttemptOutcome.FAILED: ContactState.FAILED,
    AttemptOutcome.LOST: ContactState.FAILED,
    AttemptOutcome.CANCELED: ContactState.CANCELED,
}


@dataclass(frozen=True)
class ContactStatus:
    """A contact's state, the number of attempts claimed so far, and when it is due."""

    state: ContactState = ContactState.PENDING
    attempts: int = 0
    due_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def claim(self) -> ContactStatus:
        """pending -> dialing; the new attempt's number is ``attempts`` afterwards."""
        if self.state is not ContactState.PENDING:
            raise InvalidTransition(f"claim from {self.state.value}")
        return replace(self, state=ContactState.DIALING, attempts=self.attempts + 1, due_at=None)

    def finish(self, outcome: AttemptOutcome, policy: RetryPolicy, now: datetime) -> ContactStatus:
        """dialing -> pending (a retry is due) or the final state for ``outcome``."""
        if self.state is not ContactState.DIALING:
            raise InvalidTransition(f"finish from {self.state.value}")
        if outcome is not AttemptOutcome.CANCELED:
            retry_at = policy.next_attempt_at(outcome.value, self.attempts, now)
            if retry_at is not None:
                return replace(self, state=ContactState.PENDING, due_at=retry_at)
        return replace(self, state=_FINAL_FOR[outcome], due_at=None)

    def cancel(self) -> ContactStatus:
        """pending -> canceled (a contact being dialed finishes its attempt first)."""
        if self.state is not ContactState.PENDING:
            raise InvalidTransition(f"cancel from {self.state.value}")
        return replace(self, state=ContactState.CANCELED, due_at=None)
