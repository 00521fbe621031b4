"""Login throttling that stops password guessing without letting a script lock staff out.

Login names are guessable (``operator.cc``), so a plain "five failures lock the account"
lets anyone lock a contact centre out of a shift. The rule instead:

- **Known devices.** A browser from which a user has logged in carries a device token
  (the ``herald_device`` cookie). Its attempts for that user are counted apart: five
  failures in a row lock that device for that user only. The account's lock does not bind
  it, so an operator at their own workstation logs in while a script hammers their login.
- **The account, for unknown devices.** Five failures in a row from devices the user never
  logged in from lock the account for them: 1 minute, then 2, 4, 8, up to 15, each lock
  twice the one before until the user logs in successfully.
- **The client address.** Failures from unknown devices are counted per address (an IPv6
  /64) over a 15-minute window: the first 10 are free, then the address waits 1 s, 2 s,
  4 s... up to 60 s between attempts (429 with Retry-After), whatever login it tries.
- Any lock ends the user's open sessions (``crm.users.login``), and is journalled.

Every counter is taken *before* the password is checked, atomically, so a thousand
parallel guesses cannot all slip in before the first failure is recorded; a success gives
the address's count back. The numbers above are the defaults (``HERALD_LOGIN_*``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets

import asyncpg
import msgspec

from herald.errors import AccountLocked, TooManyAttempts

DEVICE_TOKEN_MAX_LENGTH = 100


class LoginPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers of the rule (settings ``HERALD_LOGIN_*``)."""

    max_failures: int = 5
    lockout_seconds: int = 60
    lockout_max_seconds: int = 15 * 60
    address_free_failures: int = 10
    address_window_seconds: int = 15 * 60
    address_max_delay_seconds: int = 60
    device_days: int = 90

    def lock_seconds(self, previous_locks: int) -> int:
        """How long the next lock lasts after ``previous_locks`` locks in a row."""
        return min(self.lockout_max_seconds, self.lockout_seconds * 2 ** min(previous_locks, 30))


class Claim(msgspec.Struct, frozen=True):
    """An attempt allowed to check its password; what a failure of it means."""

    device: bytes | None
    """The device token's hash when the attempt comes from a known device of the user."""
    failures: int
    """Failures in a row of the account (or device) if this attempt fails too."""
    locks_until: dt.datetime | None
    """When set, the attempt was the last one allowed: failing it locks until then."""


def device_hash(token: str | None) -> bytes | None:
    """The stored form of a device token from a cookie (None for none or a malformed one)."""
    if not token or len(token) > DEVICE_TOKEN_MAX_LENGTH or not token.isascii():
        return None
    return hashlib.sha256(token.encode()).digest()


def new_device_token() -> str:
    return secrets.token_urlsafe(32)


async def take_address_attempt(
    conn: asyncpg.Connection, policy: LoginPolicy, address: str | None
) -> None:
    """Count an attempt from an unknown device against its address, or TooManyAttempts.

    An address with ``address_free_failures`` failures in the window must wait 1 s after
    its last attempt, then 2 s, 4 s... (at most ``address_max_delay_seconds``).
    """
    if address is None:
        return
    free, window = policy.address_free_failures, policy.address_window_seconds
    exponent = "least(f.failures - $2, 30)"
    taken = await conn.fetchval(
        f"""
        INSERT INTO login_address_failures AS f (address, failures, last_attempt_at)
        VALUES (herald_login_address($1::inet), 1, herald_now())
        ON CONFLICT (address) DO UPDATE SET
            failures = CASE WHEN f.last_attempt_at <= herald_now() - make_interval(secs => $3)
                            THEN 1 ELSE f.failures + 1 END,
            last_attempt_at = herald_now()
        WHERE f.last_attempt_at <= herald_now() - make_interval(secs => $3)
           OR f.failures < $2
           OR f.last_attempt_at + make_interval(secs => least($4, 2 ^ {exponent}))
              <= herald_now()
        RETURNING f.failures
        """,
        address,
        free,
        window,
        policy.address_max_delay_seconds,
    )
    if taken is None:
        wait = await conn.fetchval(
            f"""
            SELECT extract(epoch FROM f.last_attempt_at + make_interval(secs => least($3, 2 ^ {exponent}))
                                      - herald_now())
            FROM login_address_failures f WHERE f.address = herald_login_address($1::inet)
            """,
            address,
            free,
            policy.address_max_delay_seconds,
        )
        seconds = max(1, math.ceil(wait or 1))
        raise TooManyAttempts(
            f"too many failed logins from this address; try again in {seconds} s",
            retry_after=seconds,
        )


async def give_address_attempt_back(conn: asyncpg.Connection, address: str | None) -> None:
    """A successful login does not count against its address."""
    if address is not None:
        await conn.execute(
            "UPDATE login_address_failures SET failures = greatest(failures - 1, 0) "
            "WHERE address = herald_login_address($1::inet)",
            address,
        )


async def is_known_device(
    conn: asyncpg.Connection, policy: LoginPolicy, device: bytes | None, user_id: int
) -> bool:
    """Whether the user logged in from this device within ``device_days``."""
    if device is None:
        return False
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM login_devices WHERE token_hash = $1 AND user_id = $2 "
            "AND last_login_at > herald_now() - make_interval(days => $3))",
            device,
            user_id,
            policy.device_days,
        )
    )


async def take_attempt(
    conn: asyncpg.Connection, policy: LoginPolicy, user_id: int, device: bytes | None
) -> Claim:
    """Count an attempt against the known device (if any) or the account; AccountLocked if
    the one it counts against is locked. Commits at once, before the password is checked."""
    columns = "failed_logins, locked_until, lockouts, herald_now() AS now"
    if device is not None:
        key: tuple[object, ...] = (device, user_id)
        select = f"SELECT {columns} FROM login_devices WHERE token_hash = $1 AND user_id = $2"
        update = (
            "UPDATE login_devices SET failed_logins = $3, locked_until = $4, lockouts = $5 "
            "WHERE token_hash = $1 AND user_id = $2"
        )
    else:
        key = (user_id,)
        select = f"SELECT {columns} FROM users WHERE id = $1"
        update = (
            "UPDATE users SET failed_logins = $2, locked_until = $3, lockouts = $4 WHERE id = $1"
        )
    async with conn.transaction():
        row = await conn.fetchrow(select + " FOR UPDATE", *key)
        now, until = row["now"], row["locked_until"]
        if until is not None and until > now:
            where = "on this device" if device is not None else "for devices not used before"
            raise AccountLocked(
                f"too many failed logins; the account is locked {where}", until.isoformat()
            )
        # A lock that has run out starts the count afresh (but not the doubling).
        failures = 1 if until is not None else row["failed_logins"] + 1
        locks = failures >= policy.max_failures
        new_until = (
            now + dt.timedelta(seconds=policy.lock_seconds(row["lockouts"])) if locks else None
        )
        await conn.execute(update, *key, failures, new_until, row["lockouts"] + locks)
    return Claim(device=device, failures=failures, locks_until=new_until)


async def succeeded(conn: asyncpg.Connection, user_id: int, remember: bytes) -> None:
    """A right password: clear the counters and remember the device (in the caller's
    transaction)."""
    await conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL, lockouts = 0, "
        "last_login_at = herald_now() WHERE id = $1",
        user_id,
    )
    await conn.execute(
        """
        INSERT INTO login_devices (token_hash, user_id) VALUES ($1, $2)
        ON CONFLICT (token_hash, user_id) DO UPDATE SET last_login_at = herald_now(),
            failed_logins = 0, locked_until = NULL, lockouts = 0
        """,
        remember,
        user_id,
    )


async def forget_locks(conn: asyncpg.Connection, user_id: int) -> None:
    """An administrator's unlock or password reset: the account and its devices start afresh."""
    await conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL, lockouts = 0 WHERE id = $1",
        user_id,
    )
    await conn.execute(
        "UPDATE login_devices SET failed_logins = 0, locked_until = NULL, "
        "lockouts = 0 WHERE user_id = $1",
        user_id,
    )
