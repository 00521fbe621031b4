"""What each channel posts, and how it becomes one inbound item.

Viber and Telegram payloads are decoded leniently (the platforms add fields over time);
the forms, e-mail, app and walk-in bodies are ours and strict.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import Annotated, Any, Literal

import msgspec

from crm.cases.identify import valid_email
from crm.cases.types import CaseType, Priority
from herald.bounds import Id, Int64
from herald.errors import InvalidInput
from herald.phones import normalise_phone

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
OrNumber = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{10}$")]
PositiveId = Id
CASE_NUMBER = re.compile(r"ЗВ-\d{4}-\d{7,}")


class Inbound(msgspec.Struct, kw_only=True, frozen=True):
    """An inbound item of any channel, as the intake pipeline takes it."""

    channel: str
    text: str
    subject: str | None = None
    name: str | None = None
    phone: str | None = None  # as received; normalised by the pipeline
    email: str | None = None
    or_number: str | None = None
    client_id: Id | None = None
    # A chat: follow-ups of the same chat append to its open case.
    chat_ref: str | None = None
    # Unique id of this item ('email:<Message-ID>', ...): a replay adds nothing.
    external_id: str | None = None
    # E-mail threading: external ids of earlier messages (In-Reply-To, References).
    thread_refs: tuple[str, ...] = ()
    # A case number the sender refers to (e-mail subject, app reply).
    thread_number: str | None = None
    data: dict[str, Any] | None = None


class Chosen(msgspec.Struct, frozen=True):
    """The operator's own classification at registration (overrides the proposal)."""

    category_id: Id | None = None
    case_type: str | None = None
    priority: str | None = None


# -- calls (CTI) --------------------------------------------------------------------------


class CallRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A finished or missed call as the CTI integration reports it on hang-up."""

    call_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    caller: Annotated[str, msgspec.Meta(max_length=40)]
    outcome: Literal["answered", "missed"]
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    agent_login: str | None = None
    client_id: Id | None = None  # identified by the IVR / CTI before connection
    or_number: str | None = None  # entered in the IVR
    queue: str | None = None  # VICIdial in-group
    notes: str | None = None  # the agent's wrap-up notes


def call_inbound(call: CallRecord) -> Inbound:
    subject = "Пропущений дзвінок" if call.outcome == "missed" else "Вхідний дзвінок"
    phone = normalise_phone(call.caller) if call.caller else None
    body = (
        call.notes.strip()
        if call.notes and call.notes.strip()
        else f"{subject} з номера {phone or call.caller or 'невідомого'}"
    )
    duration = (call.ended_at - call.started_at).total_seconds() if call.ended_at else None
    return Inbound(
        channel="call",
        text=body,
        subject=subject,
        phone=call.caller or None,
        client_id=call.client_id,
        or_number=call.or_number,
        external_id=f"call:{call.call_id}",
        data={
            "call_id": call.call_id,
            "outcome": call.outcome,
            "started_at": call.started_at.isoformat(),
            "ended_at": call.ended_at.isoformat() if call.ended_at else None,
            "duration_seconds": duration,
            "agent_login": call.agent_login,
            "queue": call.queue,
        },
    )


# -- Viber REST bot API callbacks ---------------------------------------------------------


class ViberSender(msgspec.Struct):
    id: str
    name: str | None = None
    language: str | None = None
    country: str | None = None


class ViberContact(msgspec.Struct):
    name: str | None = None
    phone_number: str | None = None


class ViberLocation(msgspec.Struct):
    lat: float
    lon: float


class ViberMessage(msgspec.Struct):
    type: str
    text: str | None = None
    media: str | None = None
    file_name: str | None = None
    contact: ViberContact | None = None
    location: ViberLocation | None = None
    tracking_data: str | None = None


class ViberCallback(msgspec.Struct):
    """A callback Viber posts to the bot's webhook (event 'message', 'subscribed', ...)."""

    event: str
    timestamp: Int64 | None = None
    message_token: Int64 | None = None
    sender: ViberSender | None = None
    message: ViberMessage | None = None


def viber_inbound(cb: ViberCallback) -> Inbound | None:
    """The inbound item of a 'message' callback; None for the other events."""
    if cb.event != "message":
        return None
    if cb.sender is None:
        raise InvalidInput("sender", "a message callback names its sender")
    if cb.message is None:
        raise InvalidInput("message", "a message callback carries the message")
    msg = cb.message
    phone = msg.contact.phone_number if msg.type == "contact" and msg.contact else None
    if msg.text and msg.text.strip():
        text = msg.text.strip()
    elif msg.type == "contact" and msg.contact:
        text = f"[контакт] {msg.contact.name or ''} {phone or ''}".strip()
    elif msg.type == "location" and msg.location:
        text = f"[локація] {msg.location.lat}, {msg.location.lon}"
    else:
        text = f"[{msg.type}] {msg.file_name or msg.media or ''}".strip()
    return Inbound(
        channel="viber",
        text=text,
        name=cb.sender.name,
        phone=phone,
        chat_ref=f"viber:{cb.sender.id}",
        external_id=f"viber:{cb.message_token}" if cb.message_token else None,
        data={"viber_user_id": cb.sender.id, "message_type": msg.type, "media": msg.media},
    )


# -- Telegram Bot API updates -------------------------------------------------------------


class TelegramUser(msgspec.Struct):
    id: Int64
    is_bot: bool = False
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None


class TelegramChat(msgspec.Struct):
    id: Int64
    type: str = "private"


class TelegramContact(msgspec.Struct):
    phone_number: str
    first_name: str = ""
    last_name: str | None = None
    user_id: Int64 | None = None


class TelegramMessage(msgspec.Struct):
    message_id: Int64
    chat: TelegramChat
    date: Int64 = 0
    sender: TelegramUser | None = msgspec.field(default=None, name="from")
    text: str | None = None
    caption: str | None = None
    contact: TelegramContact | None = None
    document: dict[str, Any] | None = None
    photo: list[dict[str, Any]] | None = None


class TelegramUpdate(msgspec.Struct):
    """An Update Telegram posts to the bot's webhook."""

    update_id: Int64
    message: TelegramMessage | None = None


def telegram_inbound(update: TelegramUpdate) -> Inbound | None:
    """The inbound item of a new message; None for other updates (edits, callbacks...)."""
    msg = update.message
    if msg is None or (msg.sender is not None and msg.sender.is_bot):
        return None
    # A shared contact identifies the client only when it is the sender's own.
    phone = None
    if msg.contact and msg.sender and msg.contact.user_id == msg.sender.id:
        phone = msg.contact.phone_number
    if msg.text and msg.text.strip():
        text = msg.text.strip()
    elif msg.caption and msg.caption.strip():
        text = msg.caption.strip()
    elif msg.contact:
        text = f"[контакт] {msg.contact.first_name} {msg.contact.phone_number}"
    else:
        text = "[вкладення]" if msg.document or msg.photo else "[повідомлення без тексту]"
    name = (
        " ".join(p for p in (msg.sender.first_name, msg.sender.last_name) if p)
        if msg.sender
        else None
    )
    return Inbound(
        channel="telegram",
        text=text,
        name=name or None,
        phone=phone,
        chat_ref=f"telegram:{msg.chat.id}",
        external_id=f"telegram:{msg.chat.id}:{msg.message_id}",
        data={
            "telegram_chat_id": msg.chat.id,
            "telegram_user": msg.sender.username if msg.sender else None,
        },
    )


# -- web forms (site, personal cabinet), mobile app, e-mail, walk-in ----------------------


class FormSubmission(msgspec.Struct, forbid_unknown_fields=True):
    """A feedback form of the site or the personal cabinet."""

    source: Literal["site", "cabinet"]
    text: Text
    topic: Short | None = None
    name: Short | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    or_number: OrNumber | None = None
    client_id: PositiveId | None = None
    # The form's own id of this submission: a resubmission is not a second case.
    submission_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


def _checked_contact(phone: str | None, email: str | None) -> tuple[str | None, str | None]:
    if phone is not None and normalise_phone(phone) is None:
        raise InvalidInput("phone", f"not a valid phone number: {phone!r}")
    if email is not None and not valid_email(email):
        raise InvalidInput("email", f"not a valid e-mail address: {email!r}")
    return phone, email


def form_inbound(form: FormSubmission) -> Inbound:
    phone, email = _checked_contact(form.phone, form.email)
    if phone is None and email is None and form.client_id is None:
        raise InvalidInput(
            "phone",
            "give a phone, an e-mail or the client id, so that the answer can reach the client",
        )
    return Inbound(
        channel=form.source,
        text=form.text.strip() or form.text,
        subject=form.topic,
        name=form.name,
        phone=phone,
        email=email,
        or_number=form.or_number,
        client_id=form.client_id,
        external_id=f"{form.source}:{form.submission_id}" if form.submission_id else None,
    )


class AppRequest(msgspec.Struct, forbid_unknown_fields=True):
    """An appeal from the mobile app, whose user is a known client."""

    client_id: PositiveId
    text: Text
    topic: Short | None = None
    # Reply to an open case of this client (its number), instead of a new one.
    case_number: Annotated[str, msgspec.Meta(pattern=r"^ЗВ-\d{4}-\d{7,}$")] | None = None
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


def app_inbound(req: AppRequest) -> Inbound:
    return Inbound(
        channel="app",
        text=req.text,
        subject=req.topic,
        client_id=req.client_id,
        thread_number=req.case_number,
        external_id=f"app:{req.request_id}" if req.request_id else None,
    )


class InboundEmail(msgspec.Struct, forbid_unknown_fields=True):
    """An inbound e-mail as the mail gateway hands it over (headers already decoded)."""

    sender: Annotated[str, msgspec.Meta(min_length=3, max_length=998)] = msgspec.field(name="from")
    message_id: Annotated[str, msgspec.Meta(min_length=3, max_length=998)]
    to: list[Annotated[str, msgspec.Meta(max_length=998)]] = []
    subject: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    in_reply_to: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    references: list[Annotated[str, msgspec.Meta(max_length=998)]] = []
    text: Annotated[str, msgspec.Meta(max_length=200_000)] | None = None
    html: Annotated[str, msgspec.Meta(max_length=1_000_000)] | None = None


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts)).strip()


def _message_id(raw: str) -> str:
    return raw.strip().strip("<>").strip()


def email_inbound(mail: InboundEmail) -> Inbound:
    name, address = parseaddr(mail.sender)
    if not address or not valid_email(address):
        raise InvalidInput("from", f"no e-mail address in {mail.sender!r}")
    message_id = _message_id(mail.message_id)
    if not message_id:
        raise InvalidInput("message_id", "the Message-ID header is required")
    text = (mail.text or "").strip() or html_text(mail.html or "")
    if not text:
        raise InvalidInput("text", "the message has neither text nor HTML content")
    refs = [_message_id(r) for r in [*(mail.references or []), mail.in_reply_to or ""]]
    # References may come as one header value with several ids.
    ids = [i for r in refs for i in re.split(r"[\s<>,]+", r) if i]
    number = CASE_NUMBER.search(mail.subject or "")
    return Inbound(
        channel="email",
        text=text,
        subject=(mail.subject or "").strip() or None,
        name=name or None,
        email=address,
        external_id=f"email:{message_id}",
        thread_refs=tuple(f"email:{i}" for i in dict.fromkeys(ids)),
        thread_number=number.group(0) if number else None,
        data={
            "message_id": message_id,
            "to": mail.to,
            "in_reply_to": mail.in_reply_to,
            "has_html": mail.html is not None,
        },
    )


class WalkInRegistration(msgspec.Struct, forbid_unknown_fields=True):
    """A case an operator registers by hand: a walk-in visit, or a call taken without CTI."""

    text: Text
    channel: Literal["walk_in", "call"] = "walk_in"
    subject: Short | None = None
    name: Short | None = None
    client_id: PositiveId | None = None
    or_number: OrNumber | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    category_id: PositiveId | None = None
    case_type: CaseType | None = None
    priority: Priority | None = None


def walk_in_inbound(reg: WalkInRegistration) -> tuple[Inbound, Chosen]:
    phone, email = _checked_contact(reg.phone, reg.email)
    return (
        Inbound(
            channel=reg.channel,
            text=reg.text,
            subject=reg.subject,
            name=reg.name,
            phone=phone,
            email=email,
            or_number=reg.or_number,
            client_id=reg.client_id,
        ),
        Chosen(reg.category_id, reg.case_type, reg.priority),
    )
