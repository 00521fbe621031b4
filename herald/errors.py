"""Domain errors of Herald's core; admin_api turns each into an RFC 9457 problem response."""

from __future__ import annotations

from dataclasses import dataclass


class HeraldError(Exception):
    """Base of every error the domain raises on purpose; ``code`` names the kind for clients."""

    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Attempt:
    """Input that reached past a guard rather than missing it by mistake: a template body
    reaching for Python internals or files (``template_sandbox``), SQL where a segment
    condition takes a name or a typed value (``sql``). Refused like any bad input, and
    journalled by the API (``entity_type`` ``security``, ``entity_id`` the kind)."""

    kind: str
    field: str
    detail: str
    sample: str  # the offending input (the journal keeps its first 300 characters)


class InvalidInput(HeraldError):
    """A value given by the caller is wrong; ``field`` names it (dotted path for nested).

    ``attempts`` lists the parts of it that look like an attack (journalled, see Attempt).
    """

    code = "invalid-input"

    def __init__(self, field: str, detail: str, *, attempts: tuple[Attempt, ...] = ()) -> None:
        super().__init__(detail)
        self.field = field
        self.attempts = attempts


class NotFound(HeraldError):
    """The entity asked for does not exist (or is not visible to the caller)."""

    code = "not-found"


class Conflict(HeraldError):
    """The request clashes with the current state (a duplicate login, a stale version)."""

    code = "conflict"


class AuthenticationFailed(HeraldError):
    """Login or token was not accepted; deliberately vague about which part was wrong."""

    code = "authentication-failed"


class AccountLocked(HeraldError):
    """Too many failed logins; the account is locked until ``until`` (ISO 8601)."""

    code = "account-locked"

    def __init__(self, detail: str, until: str) -> None:
        super().__init__(detail)
        self.until = until


class TooManyAttempts(HeraldError):
    """Too many failed logins from the caller's address; retry after ``retry_after`` seconds."""

    code = "too-many-attempts"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
