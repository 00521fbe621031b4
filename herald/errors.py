"""Domain errors of Herald's core; admin_api turns each into an RFC 9457 problem response."""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error the domain raises on purpose; ``code`` names the kind for clients."""

    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(HeraldError):
    """A value given by the caller is wrong; ``field`` names it (dotted path for nested)."""

    code = "invalid-input"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


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
