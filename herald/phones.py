"""The one phone normaliser: a number as people write it, in the E.164 form Herald stores.

Contacts, caller ids of the telephony, case intake, inbound SMS and search all compare
phones in this form, so they must all write it the same way.
"""

from __future__ import annotations

import phonenumbers

#: Where a number without a country code is: Ukraine (050..., 38050..., +38 050...).
REGION = "UA"


def normalise_phone(raw: str) -> str | None:
    """E.164 of a phone written any usual way (0671234567, +38 (067) 123-45-67, 380671234567);
    None when it is not a valid number (anonymous, short, letters)."""
    try:
        number = phonenumbers.parse(raw, REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
