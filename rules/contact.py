"""Contact (IC-02): a recipient without an address for the channel is skipped with ``no_contact``.

E-mail goes to the recipient's e-mail address, every other channel (SMS, Viber) to their
phone. The addresses come with the batch's recipients (the dispatcher reads them in its
recipient query), so this check costs no query of its own. Like a missing consent, a
missing contact passes the message on to the next channel of its chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from rules.decision import NO_CONTACT, Skip


class Addressee(Protocol):
    """What the rules read of a recipient: who it is, where to reach them, where they live."""

    @property
    def client_id(self) -> int: ...

    @property
    def phone(self) -> str | None: ...

    @property
    def email(self) -> str | None: ...

    @property
    def region_code(self) -> str | None: ...


def address(recipient: Addressee, channel: str) -> str | None:
    """The address a message on ``channel`` goes to: the e-mail for e-mail, else the phone."""
    return recipient.email if channel == "email" else recipient.phone


def check(
    recipients: Mapping[int, Addressee], client_ids: Iterable[int], channel: str
) -> dict[int, Skip]:
    """The batch check: clients with no address for ``channel``, skipped with ``no_contact``."""
    if channel == "email":
        return {c: NO_CONTACT for c in client_ids if not recipients[c].email}
    return {c: NO_CONTACT for c in client_ids if not recipients[c].phone}
