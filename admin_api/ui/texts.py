"""Texts the domain writes, shown in the person's language: the error a page action met and
the titles of timeline entries.

The domain keeps its own texts (the API's problem details are English; the timeline's
titles are Ukrainian, as stored). Pages do not show those as they are: an error is shown
by its kind (and the field it names) as a message of the catalogue, its original detail
beside it as a technical note; a timeline entry's title is made again from its kind and
its data. Entries whose data is not enough (older rows) keep their stored title.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from admin_api.ui.i18n import Formats
from admin_api.ui.labels import LABELS
from admin_api.ui.menu import N_
from crm.timeline import TimelineItem
from herald.errors import Conflict, HeraldError, InvalidInput, NotFound

Translate = Callable[[str], str]

# Fields the operator's forms send, as the form labels them.
FIELDS: dict[str, str] = {
    "phone": N_("Phone"),
    "email": N_("E-mail"),
    "first_name": N_("First name"),
    "last_name": N_("Last name"),
    "middle_name": N_("Patronymic"),
    "text": N_("Text"),
    "subject": N_("Subject"),
    "status": N_("Status"),
    "value": N_("Reading"),
    "read_on": N_("Date of the reading"),
    "into": N_("into case id"),
    "from": N_("From"),
    "to": N_("To"),
    "due_on": N_("Due on"),
    "due_at": N_("Due on"),
    "title": N_("Task"),
    "group_code": N_("Department"),
    "category_id": N_("Category"),
    "case_type": N_("Type"),
    "priority": N_("Priority"),
    "role": N_("Role"),
    "account_id": N_("Account"),
    "client_id": "Client_ID",
    "or_number": N_("OR"),
    "q": N_("Search"),
    "template_id": N_("Template"),
    "channel": N_("Channel"),
    "question": N_("Question"),
    "comment": N_("Comment"),
    # the supervisor's and administrator's forms
    "login": N_("Login"),
    "full_name": N_("Name"),
    "password": N_("Password"),
    "new_password": N_("New password"),
    "roles": N_("Roles"),
    "permissions": N_("Permission"),
    "capacity": N_("Capacity"),
    "extension": N_("Extension"),
    "code": N_("Code"),
    "name_uk": N_("Name (Ukrainian)"),
    "name_en": N_("Name (English)"),
    "date": N_("Date"),
    "case_ids": N_("Cases"),
    "entity_type": N_("Entity"),
    "since": N_("From"),
    "until": N_("To"),
}


class ErrorText:
    """What a page shows of a domain error: a translated headline, the original detail."""

    def __init__(self, headline: str, detail: str) -> None:
        self.headline = headline
        self.detail = detail


def error_text(error: HeraldError, translate: Translate) -> ErrorText:
    """The error as a message of the person's language (its detail kept as it was)."""
    if isinstance(error, InvalidInput):
        base = error.field.split(".")[0].split("[")[0]
        name = FIELDS.get(base)
        if name is not None:
            headline = translate(N_("The value of “%(field)s” is not accepted.")) % {
                "field": translate(name)
            }
        else:
            headline = translate(N_("A value is not accepted."))
    elif isinstance(error, NotFound):
        headline = translate(N_("It does not exist (any more)."))
    elif isinstance(error, Conflict):
        headline = translate(N_("This cannot be done in the current state."))
    else:
        headline = translate(N_("This cannot be done."))
    return ErrorText(headline, error.detail)


def _amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


# Subjects the domain generates for cases (crm.cases.channels), as messages.
GENERATED: dict[str, str] = {
    "Пропущений дзвінок": N_("Missed call"),
    "Вхідний дзвінок": N_("Incoming call"),
}


def generated(text: str | None, translate: Translate) -> str:
    """A text the domain generated, in the person's language; any other text as it is."""
    if text is None:
        return ""
    found = GENERATED.get(text)
    return translate(found) if found is not None else text


def timeline_title(item: TimelineItem, translate: Translate, formats: Formats) -> str:
    """The entry's title in the person's language, made from its kind and data."""
    money = formats.money
    d = item.detail or {}

    def label(code: str) -> str:
        return translate(LABELS[code]) if code in LABELS else code

    try:
        if item.kind == "message" and item.source == "message":
            channel = label(item.channel or "")
            if d.get("campaign_name"):
                return f"{channel}: {d['campaign_name']}"
            return translate(N_("Message %(channel)s")) % {"channel": channel}
        if item.kind == "reading" and "serial_number" in d and "value" in d:
            return translate(N_("Meter %(serial)s reading: %(value)s m³ (%(source)s)")) % {
                "serial": d["serial_number"],
                "value": formats.number(Decimal(str(d["value"]))),
                "source": label(str(d.get("source") or "")),
            }
        if item.kind == "charge" and _amount(d.get("amount")) is not None:
            return translate(N_("Charge for %(period)s: %(amount)s (OR %(or_number)s)")) % {
                "period": str(d.get("period") or "")[:7],
                "amount": money(_amount(d["amount"])),
                "or_number": d.get("or_number", ""),
            }
        if item.kind == "payment" and _amount(d.get("amount")) is not None:
            return translate(N_("Payment %(amount)s (OR %(or_number)s)")) % {
                "amount": money(_amount(d["amount"])),
                "or_number": d.get("or_number", ""),
            }
        if item.kind == "call" and d.get("ref_type") == "call":
            phone = item.title.rsplit(" ", 1)[-1]
            what = (
                N_("Incoming call %(phone)s")
                if item.direction == "in"
                else N_("Outgoing call %(phone)s")
            )
            return translate(what) % {"phone": phone}
        if item.kind == "application" and d.get("application_kind"):
            return translate(N_("Application No. %(id)s: %(kind)s")) % {
                "id": d.get("ref_id", ""),
                "kind": label(str(d["application_kind"])),
            }
        if item.kind == "shop_order" and d.get("ref_id") and _amount(d.get("total")) is not None:
            return translate(N_("Online shop order %(id)s: %(total)s %(currency)s")) % {
                "id": d["ref_id"],
                "total": d["total"],
                "currency": d.get("currency", ""),
            }
        if item.kind == "case":
            return generated(item.title, translate)
    except (KeyError, TypeError, ValueError, InvalidOperation):
        pass
    return item.title
