"""Keyset cursors: the one codec of the opaque ``cursor`` a page hands out for the next one.

A cursor is the sort key of a page's last item (for example its time and id), written as
a JSON array and base64url-encoded without padding. Each list states the shape of its key
when it reads one back, so a cursor of another list, a cut one or a made-up one is a 400
naming the parameter, never a query with a wrong value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any

import msgspec

from herald.errors import InvalidInput

#: An aware instant within a cursor (a naive one would compare wrongly with ``timestamptz``).
AwareTime = Annotated[dt.datetime, msgspec.Meta(tz=True)]

KeyPart = int | str | dt.datetime | dt.date | None

_encoder = msgspec.json.Encoder()


def encode(*key: KeyPart) -> str:
    """The cursor standing for the sort key ``key``."""
    return base64.urlsafe_b64encode(_encoder.encode(key)).rstrip(b"=").decode()


def decode(cursor: str, shape: Any, field: str = "cursor") -> Any:
    """The key a cursor stands for, checked against ``shape`` (e.g. ``tuple[AwareTime, Id]``);
    InvalidInput naming ``field`` for anything this API did not give out. ``shape`` is a
    type expression (a tuple alias), which ``type[T]`` cannot express: hence ``Any``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(field, "not a cursor this API gave out") from None
