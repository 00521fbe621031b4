"""Message templates: what the API accepts, validation on save, compiled rendering for sends.

A template version has one body per channel (SMS, Viber, e-mail, chatbot, IVR text) in
its own language (Ukrainian unless it says otherwise), and optionally the same bodies
in the other language (``variants.translations.en``): a send renders the client's
language when the version has a body for that channel in it, else Ukrainian. Versions
stored before translations, chatbot and IVR existed decode unchanged.

A template is checked completely when it is saved (syntax, unknown variables, forbidden
constructs, link schemes, SMS segments, a render with the catalogue's example values),
so a campaign never discovers a broken template at its 5-millionth message. For sending,
a template is compiled once per (template id, version, language) and each recipient
costs one jinja2 render per field that has tags (a field without tags is a plain
string), with no parsing, no copying of the variables and no globals.

Speed (``python tests/test_templates.py --bench 100000``, one core): jinja2's per-call
cost (a Context per field, ~2.5 µs) is most of a small field's render; a hand-made
fast path for tag-light bodies was measured to save ~3 µs per field, about 1-4 % of
the per-message budget of a 5 M campaign, so it was left out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Annotated, Literal

import msgspec
from jinja2 import Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError

from dispatcher.templating.env import (
    LANGUAGES,
    Language,
    TemplateSandbox,
    VariableCatalogue,
    build_environment,
    check_source,
    constant_text,
    is_https,
    link_source_ok,
    read_html,
)
from dispatcher.templating.sms_text import (
    TransliterationTable,
    sms_stats,
    transliterate,
)
from herald.errors import Attempt, HeraldError, InvalidInput
from providers.base import EmailContent, SmsContent, ViberContent

ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
BodyText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
ChatText = Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
HtmlBody = Annotated[str, msgspec.Meta(min_length=1, max_length=500_000)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]

TemplateChannel = Literal["sms", "viber", "email", "chatbot", "ivr"]
TEMPLATE_CHANNELS: tuple[TemplateChannel, ...] = ("sms", "viber", "email", "chatbot", "ivr")


class SmsVariant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The SMS body; ``transliterate`` rewrites it in Latin for gateways that need it."""

    text: BodyText
    transliterate: TransliterationTable | None = None


class ViberVariant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Viber body: text, an optional button (caption and link) and an optional image."""

    text: BodyText
    button_text: ShortText | None = None
    button_url: BodyText | None = None
    image_url: BodyText | None = None


class EmailVariant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The e-mail body; without ``text`` the plain-text part is derived from ``html``."""

    subject: Subject
    html: HtmlBody
    text: LongText | None = None


class ChatbotButton(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A chatbot button: a caption and the https link it opens; without a link it is a
    quick reply that sends its caption back to the bot."""

    text: ShortText
    url: BodyText | None = None


class ChatbotVariant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The chatbot (Viber/Telegram bot, web chat) body: text and optional buttons."""

    text: ChatText
    buttons: Annotated[tuple[ChatbotButton, ...], msgspec.Meta(max_length=20)] = ()


class IvrVariant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Plain text the voice robot (IVR) speaks: no links, no markup, a length limit."""

    text: BodyText


class ChannelBodies(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One language's bodies, at most one per channel."""

    sms: SmsVariant | None = None
    viber: ViberVariant | None = None
    email: EmailVariant | None = None
    chatbot: ChatbotVariant | None = None
    ivr: IvrVariant | None = None


class Translations(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The same version's bodies in the other language (only channels the version has)."""

    uk: ChannelBodies | None = None
    en: ChannelBodies | None = None


class Variants(ChannelBodies, frozen=True, forbid_unknown_fields=True):
    """One body per channel in the version's language (at least one), and translations."""

    translations: Translations | None = None


class TemplateDraft(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A template as the admin API accepts it on save (every save makes a new version)."""

    name: ShortText
    variants: Variants
    language: Language = "uk"


class TemplateLimits(msgspec.Struct, frozen=True):
    """Limits checked on save, against a render with the catalogue's example values."""

    max_sms_segments: int = 4
    max_viber_text: int = 1000  # Viber business messages: 1,000 characters
    max_viber_button_text: int = 30  # Viber: a button caption of at most 30 characters
    max_chatbot_text: int = 4000  # Telegram takes 4,096; Viber bots 7,000
    max_chatbot_buttons: int = 8
    max_chatbot_button_text: int = 40
    max_ivr_text: int = 1000  # about 70 s of speech at a synthesiser's ~15 characters/s


# --- what a render produces besides providers.base's SMS, Viber and e-mail ----------


class EmailMessage(EmailContent, frozen=True, tag="email"):
    """An e-mail with the link that unsubscribes its recipient from the topic.

    The SMTP adapter turns ``unsubscribe_url`` into List-Unsubscribe headers (RFC 8058).
    It is a subclass until ``providers.base.EmailContent`` carries the field itself.
    """

    unsubscribe_url: str | None = None


class ChatbotButtonContent(msgspec.Struct, frozen=True):
    text: str
    url: str | None = None


class ChatbotContent(msgspec.Struct, frozen=True, tag="chatbot"):
    text: str
    buttons: tuple[ChatbotButtonContent, ...] = ()


class IvrContent(msgspec.Struct, frozen=True, tag="ivr"):
    text: str


# EmailMessage stands for e-mail here: its schema is what an e-mail render may carry.
RenderedContent = SmsContent | ViberContent | EmailMessage | ChatbotContent | IvrContent


ESCAPE_ATTEMPT = "template_sandbox"
"""The journal's name (Attempt.kind) for a template trying to get out of the sandbox."""


class FieldError(msgspec.Struct, frozen=True):
    """One problem with a template, at a dotted field path such as ``variants.sms.text``."""

    field: str
    detail: str
    line: int | None = None
    escape: str | None = None  # an attempt to get out of the sandbox: the body that tried


class TemplateInvalid(InvalidInput):
    """A template failed validation; ``errors`` lists every problem, ``field`` is the first.

    Errors that were sandbox escape attempts become ``attempts`` (the API journals them).
    """

    def __init__(self, errors: list[FieldError]) -> None:
        first = errors[0]
        where = f" (line {first.line})" if first.line else ""
        attempts = tuple(
            Attempt(ESCAPE_ATTEMPT, e.field, e.detail, e.escape)
            for e in errors
            if e.escape is not None
        )
        super().__init__(first.field, first.detail + where, attempts=attempts)
        self.errors = errors


class RenderError(HeraldError):
    """One recipient's message could not be rendered (bad data); the template itself is valid."""

    code = "render-error"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.reason = detail


class SmsCost(msgspec.Struct, frozen=True):
    """What an SMS body costs: encoding, characters and segments (after transliteration)."""

    encoding: str
    characters: int
    segments: int


class TranslationCheck(msgspec.Struct, frozen=True):
    """The example preview and SMS cost of one translation."""

    preview: tuple[RenderedContent, ...]
    sms: SmsCost | None = None


class TemplateCheck(msgspec.Struct, frozen=True):
    """The result of a successful validation: variables used, example preview, SMS cost."""

    variables: tuple[str, ...]
    preview: tuple[RenderedContent, ...]
    sms: SmsCost | None = None
    translations: dict[str, TranslationCheck] = {}


_draft_decoder = msgspec.json.Decoder(TemplateDraft)
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def decode_draft(body: bytes) -> TemplateDraft:
    """Decode a JSON request body into a draft, naming the bad field on failure."""
    try:
        return _draft_decoder.decode(body)
    except msgspec.ValidationError as exc:
        found = _AT_PATH.search(str(exc))
        field = re.sub(r"\[(\d+)\]", r".\1", found["path"]) if found else ""
        detail = _AT_PATH.sub("", str(exc))
        raise TemplateInvalid([FieldError(field or "body", detail)]) from None
    except msgspec.DecodeError as exc:
        raise TemplateInvalid([FieldError("body", str(exc))]) from None


# --- compiled templates ------------------------------------------------------------

# Spaces an empty optional variable leaves behind: doubled, or before punctuation.
_LOOSE_SPACES = re.compile(r" (?=[ ,.!?;:])")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\n\t\v\f\x85\u2028\u2029", " "))
# A synthesiser reading "<" or ">" from client data could take it for SSML markup; line
# breaks become spaces (a no-break space in money stays).
_SPEECH_UNSAFE = re.compile("[<> \t\r\n\v\f\x85\u2028\u2029]+")
_SPEECH_LINK = re.compile(r"https?:|www\.|://", re.IGNORECASE)
# Variables whose English value a recipient may carry under "<name>_en".
_ENGLISH_NAMES = (("region", "region_en"), ("tariff", "tariff_en"))


class _Part:
    """One compiled body field: a jinja2 template, or just a string when it has no tags."""

    __slots__ = ("_constant", "_template", "field")

    def __init__(self, field: str, template: Template | None, constant: str | None = None) -> None:
        self.field = field  # where errors point: a derived text part points at the HTML
        self._template = template
        self._constant = constant

    def render(self, variables: Mapping[str, object]) -> str:
        """Render the field with one recipient's variables; bad data raises RenderError."""
        if self._constant is not None:
            return self._constant
        template = self._template
        try:
            # What Template.render does, minus two copies of the variables and the traceback
            # rewriting; sharing ``variables`` is safe, the sandbox cannot change them.
            # _template is set whenever _constant is not; new_context only reads the mapping.
            context = template.new_context(variables, shared=True)  # type: ignore[union-attr,arg-type]  # see above
            return "".join(template.root_render_func(context))  # type: ignore[union-attr]  # see above
        except Exception as exc:  # one recipient's bad data must not stop a batch
            raise RenderError(self.field, f"{type(exc).__name__}: {exc}") from exc


def _squeeze(text: str) -> str:
    """Trim a short message and drop the spaces an empty variable left ("Мар'яна !")."""
    return _LOOSE_SPACES.sub("", text.strip())


class _Bodies:
    """One language's compiled bodies; parts are keyed by their path under ``prefix``."""

    __slots__ = (
        "_buttons",
        "_parts",
        "_transliteration",
        "_viber_extras",
        "channels",
        "language",
        "prefix",
    )

    def __init__(
        self,
        language: Language,
        prefix: str,
        parts: dict[str, _Part],
        transliteration: TransliterationTable | None,
    ) -> None:
        self.language = language
        self.prefix = prefix  # "variants", or "variants.translations.en"
        self.channels: tuple[TemplateChannel, ...] = tuple(
            c for c in TEMPLATE_CHANNELS if any(k.startswith(f"{c}.") for k in parts)
        )
        self._parts = parts
        self._transliteration = transliteration
        self._viber_extras = [
            (name, parts.get(f"viber.{name}"))
            for name in ("button_text", "button_url", "image_url")
        ]
        count = sum(1 for k in parts if k.startswith("chatbot.buttons.") and k.endswith(".text"))
        self._buttons = [
            (parts[f"chatbot.buttons.{i}.text"], parts.get(f"chatbot.buttons.{i}.url"))
            for i in range(count)
        ]

    def part(self, name: str) -> _Part:
        try:
            return self._parts[name]
        except KeyError:
            raise RenderError(
                f"{self.prefix}.{name}", "the template has no body for this channel"
            ) from None

    def render_sms(self, variables: Mapping[str, object]) -> SmsContent:
        text = _squeeze(self.part("sms.text").render(variables))
        if self._transliteration is not None:
            text = transliterate(text, self._transliteration)
        return SmsContent(text)

    def render_viber(self, variables: Mapping[str, object]) -> ViberContent:
        text = _squeeze(self.part("viber.text").render(variables))
        extras: list[str | None] = []
        for name, part in self._viber_extras:
            value = part.render(variables).strip() if part is not None else None
            if value is not None and name != "button_text" and not value.startswith("https://"):
                raise RenderError(f"{self.prefix}.viber.{name}", "the link is not an https:// URL")
            extras.append(value)
        return ViberContent(text, *extras)

    def render_email(self, variables: Mapping[str, object]) -> EmailMessage:
        subject = _squeeze(self.part("email.subject").render(variables).translate(_LINE_BREAKS))
        html = self._parts["email.html"].render(variables)
        text = self._parts["email.text"].render(variables).strip()
        if "\n\n\n" in text:  # a false {% if %} between paragraphs
            text = _BLANK_LINES.sub("\n\n", text)
        unsubscribe = variables.get("unsubscribe_url")
        # Always the EmailMessage of RenderedContent, so that a preview's schema holds.
        return EmailMessage(
            subject,
            html,
            text,
            unsubscribe if isinstance(unsubscribe, str) and unsubscribe else None,
        )

    def render_chatbot(self, variables: Mapping[str, object]) -> ChatbotContent:
        text = self.part("chatbot.text").render(variables).strip()
        buttons = []
        for caption, link in self._buttons:
            url = None
            if link is not None:
                url = link.render(variables).strip()
                if not url.startswith("https://"):
                    raise RenderError(link.field, "the link is not an https:// URL")
            buttons.append(ChatbotButtonContent(_squeeze(caption.render(variables)), url))
        return ChatbotContent(text, tuple(buttons))

    def render_ivr(self, variables: Mapping[str, object]) -> IvrContent:
        return IvrContent(
            _squeeze(_SPEECH_UNSAFE.sub(" ", self.part("ivr.text").render(variables)))
        )

    def render(self, channel: str, variables: Mapping[str, object]) -> RenderedContent:
        if channel == "sms":
            return self.render_sms(variables)
        if channel == "viber":
            return self.render_viber(variables)
        if channel == "email":
            return self.render_email(variables)
        if channel == "chatbot":
            return self.render_chatbot(variables)
        return self.render_ivr(variables)


def _in_english(variables: Mapping[str, object]) -> Mapping[str, object]:
    """The variables with the English names of region and tariff, when the recipient has them."""
    found = {name: variables[en] for name, en in _ENGLISH_NAMES if variables.get(en)}
    return {**variables, **found} if found else variables


class CompiledTemplate:
    """A validated template version compiled once, rendering one recipient's message per call.

    ``render(channel, variables, language)`` picks the bodies: the recipient's language
    if the version has this channel in it, else Ukrainian, else the version's own.
    """

    def __init__(
        self, language: Language, bodies: dict[Language, _Bodies], variables: frozenset[str]
    ) -> None:
        self.language = language
        self.variables = variables  # the catalogue names the template reads: load only these
        self.languages: tuple[Language, ...] = (language, *(k for k in bodies if k != language))
        self.channels: tuple[TemplateChannel, ...] = bodies[language].channels
        # Keyed by str: a recipient may ask for any language (or none).
        self._bodies: dict[str | None, _Bodies] = {k: v for k, v in bodies.items()}

    def bodies(self, language: Language) -> _Bodies:
        """The compiled bodies of one of the version's languages."""
        return self._bodies[language]

    def bodies_for(self, channel: str, language: str | None = None) -> _Bodies:
        """The bodies a recipient asking for ``language`` gets on ``channel``."""
        for wanted in (language, "uk", self.language):
            found = self._bodies.get(wanted)
            if found is not None and channel in found.channels:
                return found
        raise RenderError(f"variants.{channel}", "the template has no body for this channel")

    def language_for(self, channel: str, language: str | None = None) -> Language:
        """The language a recipient asking for ``language`` gets on ``channel``."""
        return self.bodies_for(channel, language).language

    def render(
        self, channel: str, variables: Mapping[str, object], language: str | None = None
    ) -> RenderedContent:
        """Render this template's body for ``channel`` with one recipient's variables."""
        bodies = self.bodies_for(channel, language)
        if bodies.language == "en":
            variables = _in_english(variables)
        return bodies.render(channel, variables)

    def _for(
        self, channel: str, variables: Mapping[str, object], language: str | None
    ) -> tuple[_Bodies, Mapping[str, object]]:
        bodies = self.bodies_for(channel, language)
        return bodies, _in_english(variables) if bodies.language == "en" else variables

    def render_sms(
        self, variables: Mapping[str, object], language: str | None = None
    ) -> SmsContent:
        """Render the SMS text, squeezed of extra spaces and transliterated if the variant says so."""
        bodies, variables = self._for("sms", variables, language)
        return bodies.render_sms(variables)

    def render_viber(
        self, variables: Mapping[str, object], language: str | None = None
    ) -> ViberContent:
        """Render the Viber text, button and image; a link that is not https is refused."""
        bodies, variables = self._for("viber", variables, language)
        return bodies.render_viber(variables)

    def render_email(
        self, variables: Mapping[str, object], language: str | None = None
    ) -> EmailContent:
        """Render the subject (forced onto one line), the HTML (escaped) and the text part."""
        bodies, variables = self._for("email", variables, language)
        return bodies.render_email(variables)

    def render_chatbot(
        self, variables: Mapping[str, object], language: str | None = None
    ) -> ChatbotContent:
        """Render the chatbot text and buttons; a button link that is not https is refused."""
        bodies, variables = self._for("chatbot", variables, language)
        return bodies.render_chatbot(variables)

    def render_ivr(
        self, variables: Mapping[str, object], language: str | None = None
    ) -> IvrContent:
        """Render the IVR text as one plain line to speak."""
        bodies, variables = self._for("ivr", variables, language)
        return bodies.render_ivr(variables)


class TemplateEngine:
    """Validates templates on save and compiles them for sending, keeping compiled ones cached.

    Built once per process with the catalogue and limits (settings later); holds one
    sandboxed environment per language and body kind, and an LRU of compiled templates
    keyed by (template id, version, language).
    """

    def __init__(
        self,
        catalogue: VariableCatalogue | None = None,
        limits: TemplateLimits | None = None,
        cache_size: int = 256,
    ) -> None:
        self.catalogue = catalogue or VariableCatalogue()
        self.limits = limits or TemplateLimits()
        self._envs = {
            (lang, html): build_environment(lang, html=html)
            for lang in LANGUAGES
            for html in (False, True)
        }
        self._cache: OrderedDict[tuple[object, int, str], CompiledTemplate] = OrderedDict()
        self._cache_size = cache_size

    def cached(
        self, template_id: object, version: int, language: Language
    ) -> CompiledTemplate | None:
        """Return the compiled template if this version is in the cache, else ``None``."""
        key = (template_id, version, language)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    def compiled(self, template_id: object, version: int, draft: TemplateDraft) -> CompiledTemplate:
        """Return the compiled template for this version, compiling and caching it on first use."""
        found = self.cached(template_id, version, draft.language)
        if found is None:
            found = self.compile(draft)
            self._cache[(template_id, version, draft.language)] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def compile(self, draft: TemplateDraft) -> CompiledTemplate:
        """Parse, check statically and compile every body; raise TemplateInvalid on any problem."""
        errors: list[FieldError] = []
        used: set[str] = set()
        compiled: dict[Language, _Bodies] = {}
        for language, prefix, bodies in _languages(draft):
            parts: dict[str, _Part] = {}
            for name, source, kind in _fields(bodies):
                field = f"{prefix}.{name}"
                if kind == "url" and not link_source_ok(source, self.catalogue):
                    errors.append(
                        FieldError(
                            field,
                            "a link must start with https:// or with a "
                            "link variable such as {{ cabinet_url }}",
                        )
                    )
                part = self._compile_part(language, field, source, kind, errors, used)
                if part is None:
                    continue
                parts[name] = part
                if kind == "html":
                    text_source, links = read_html(source)
                    errors += self._check_links(field, links)
                    if bodies.email is not None and bodies.email.text is None:
                        derived = self._compile_part(
                            language, field, text_source, "text", errors, used
                        )
                        if derived is not None:
                            parts["email.text"] = derived
            compiled[language] = _Bodies(
                language, prefix, parts, bodies.sms.transliterate if bodies.sms else None
            )
        if errors:
            raise TemplateInvalid(_unique(errors))
        return CompiledTemplate(draft.language, compiled, frozenset(used))

    def validate(self, draft: TemplateDraft) -> TemplateCheck:
        """Check a template completely before it is saved; raise TemplateInvalid listing every problem."""
        errors = _structure_errors(draft)
        for _, prefix, variants in _languages(draft):
            if variants.chatbot and len(variants.chatbot.buttons) > self.limits.max_chatbot_buttons:
                errors.append(
                    FieldError(
                        f"{prefix}.chatbot.buttons",
                        (
                            f"{len(variants.chatbot.buttons)} buttons; at most "
                            f"{self.limits.max_chatbot_buttons}"
                        ),
                    )
                )
        try:
            compiled = self.compile(draft)
        except TemplateInvalid as exc:
            errors += exc.errors
        if errors:
            raise TemplateInvalid(_unique(errors))
        checks: dict[str, TranslationCheck] = {}
        failed: set[str] = set()
        for language in compiled.languages:
            bodies = compiled.bodies(language)
            preview: list[RenderedContent] = []
            sms_cost: SmsCost | None = None
            for label, variables in (
                ("", self.catalogue.examples()),
                (" with the optional variables empty", self.catalogue.sparse_examples()),
            ):
                for channel in bodies.channels:
                    try:
                        content = compiled.render(channel, variables, language)
                    except RenderError as exc:
                        if exc.field not in failed:  # report the first way a body fails, once
                            failed.add(exc.field)
                            # The sandbox stopped it (a huge string, a formatting trick).
                            stopped = isinstance(exc.__cause__, SecurityError)
                            errors.append(
                                FieldError(
                                    exc.field,
                                    f"does not render{label}: {exc.reason}",
                                    escape=exc.reason if stopped else None,
                                )
                            )
                        continue
                    found = [
                        e
                        for e in self._content_errors(content, label, bodies.prefix)
                        if e.field not in failed
                    ]
                    failed.update(e.field for e in found)
                    errors += found
                    if not label:
                        preview.append(content)
                        if isinstance(content, SmsContent):
                            sms_cost = SmsCost(*sms_stats(content.text))
            checks[language] = TranslationCheck(tuple(preview), sms_cost)
        if errors:
            raise TemplateInvalid(_unique(errors))
        main = checks.pop(compiled.language)
        return TemplateCheck(tuple(sorted(compiled.variables)), main.preview, main.sms, checks)

    def _compile_part(
        self,
        language: Language,
        field: str,
        source: str,
        kind: str,
        errors: list[FieldError],
        used: set[str],
    ) -> _Part | None:
        env: TemplateSandbox = self._envs[(language, kind == "html")]
        tree, found, reads = check_source(env, source, self.catalogue)
        errors += [FieldError(field, f.detail, f.line, source if f.escape else None) for f in found]
        errors += self._placement_errors(field, source, kind, reads)
        used |= reads
        if tree is None:
            return None
        constant = constant_text(tree)
        if constant is not None:  # no tags: the same text for everyone, nothing to render
            return _Part(field, None, constant)
        try:
            return _Part(field, env.from_string(tree))
        except TemplateSyntaxError as exc:
            errors.append(FieldError(field, f"syntax error: {exc.message}", exc.lineno))
            return None

    def _placement_errors(
        self, field: str, source: str, kind: str, reads: set[str]
    ) -> list[FieldError]:
        """Variables and text a body of this kind may not carry (links in speech, opt-out links)."""
        errors = []
        if kind == "speech":
            links = sorted(n for n in reads if (v := self.catalogue.get(n)) and v.type == "url")
            if links:
                errors.append(
                    FieldError(
                        field, f"IVR text is spoken: it cannot carry links ({', '.join(links)})"
                    )
                )
            if _SPEECH_LINK.search(source):
                errors.append(FieldError(field, "IVR text is spoken: it cannot carry links"))
            if "<" in source or ">" in source:
                errors.append(FieldError(field, "IVR text is plain speech: no markup (< or >)"))
        if "unsubscribe_url" in reads and ".email." not in field:
            errors.append(
                FieldError(
                    field,
                    "unsubscribe_url unsubscribes from e-mail: use it only in the e-mail body",
                )
            )
        return errors

    def _check_links(self, field: str, links: list[tuple[str, str]]) -> list[FieldError]:
        bad = [
            value
            for name, value in links
            if not link_source_ok(value, self.catalogue)
            and not (name == "href" and value.startswith(("mailto:", "tel:", "#")))
        ]
        return [
            FieldError(field, f"link '{value[:80]}' must start with https:// or a link variable")
            for value in bad
        ]

    def _content_errors(
        self, content: RenderedContent, label: str, prefix: str
    ) -> list[FieldError]:
        limits, errors = self.limits, []
        if isinstance(content, SmsContent):
            stats = sms_stats(content.text)
            if not content.text:
                errors.append(FieldError(f"{prefix}.sms.text", f"renders empty{label}"))
            elif stats.segments > limits.max_sms_segments:
                errors.append(
                    FieldError(
                        f"{prefix}.sms.text",
                        (
                            f"{stats.segments} SMS segments{label or ' with the example values'} "
                            f"({stats.encoding}, {stats.characters} characters); at most "
                            f"{limits.max_sms_segments} allowed"
                        ),
                    )
                )
        elif isinstance(content, ViberContent):
            if not content.text:
                errors.append(FieldError(f"{prefix}.viber.text", f"renders empty{label}"))
            elif len(content.text) > limits.max_viber_text:
                errors.append(
                    FieldError(
                        f"{prefix}.viber.text",
                        (
                            f"{len(content.text)} characters{label}; Viber takes at most "
                            f"{limits.max_viber_text}"
                        ),
                    )
                )
            if content.button_text is not None and not (
                0 < len(content.button_text) <= limits.max_viber_button_text
            ):
                errors.append(
                    FieldError(
                        f"{prefix}.viber.button_text",
                        (
                            f"a button caption must have 1 to {limits.max_viber_button_text} "
                            f"characters, has {len(content.button_text)}{label}"
                        ),
                    )
                )
            for name in ("button_url", "image_url"):
                url = getattr(content, name)
                if url is not None and not is_https(url):
                    errors.append(
                        FieldError(
                            f"{prefix}.viber.{name}",
                            f"renders to '{url[:80]}', not an https:// URL{label}",
                        )
                    )
        elif isinstance(content, EmailContent):
            for name in ("subject", "html"):
                if not getattr(content, name).strip():
                    errors.append(FieldError(f"{prefix}.email.{name}", f"renders empty{label}"))
        elif isinstance(content, ChatbotContent):
            errors += self._chatbot_errors(content, label, f"{prefix}.chatbot")
        elif isinstance(content, IvrContent):
            if not content.text:
                errors.append(FieldError(f"{prefix}.ivr.text", f"renders empty{label}"))
            elif len(content.text) > limits.max_ivr_text:
                errors.append(
                    FieldError(
                        f"{prefix}.ivr.text",
                        (
                            f"{len(content.text)} characters{label}; an IVR text takes at most "
                            f"{limits.max_ivr_text}"
                        ),
                    )
                )
        return errors

    def _chatbot_errors(self, content: ChatbotContent, label: str, at: str) -> list[FieldError]:
        limits, errors = self.limits, []
        if not content.text:
            errors.append(FieldError(f"{at}.text", f"renders empty{label}"))
        elif len(content.text) > limits.max_chatbot_text:
            errors.append(
                FieldError(
                    f"{at}.text",
                    (
                        f"{len(content.text)} characters{label}; a chatbot message takes at most "
                        f"{limits.max_chatbot_text}"
                    ),
                )
            )
        for i, button in enumerate(content.buttons):
            if not 0 < len(button.text) <= limits.max_chatbot_button_text:
                errors.append(
                    FieldError(
                        f"{at}.buttons.{i}.text",
                        (
                            f"a button caption must have 1 to {limits.max_chatbot_button_text} "
                            f"characters, has {len(button.text)}{label}"
                        ),
                    )
                )
            if button.url is not None and not is_https(button.url):
                errors.append(
                    FieldError(
                        f"{at}.buttons.{i}.url",
                        f"renders to '{button.url[:80]}', not an https:// URL{label}",
                    )
                )
        return errors


def _languages(draft: TemplateDraft) -> Iterator[tuple[Language, str, ChannelBodies]]:
    """Yield (language, field prefix, bodies): the version's own language first."""
    yield draft.language, "variants", draft.variants
    translations = draft.variants.translations
    if translations is not None:
        for language in LANGUAGES:
            bodies = getattr(translations, language)
            if bodies is not None and language != draft.language:
                yield language, f"variants.translations.{language}", bodies


def _fields(v: ChannelBodies) -> Iterator[tuple[str, str, str]]:
    """Yield (field path, source, kind) for every body; kind: text, html, url or speech."""
    if v.sms:
        yield "sms.text", v.sms.text, "text"
    if v.viber:
        yield "viber.text", v.viber.text, "text"
        if v.viber.button_text is not None:
            yield "viber.button_text", v.viber.button_text, "text"
        for name in ("button_url", "image_url"):
            if (value := getattr(v.viber, name)) is not None:
                yield f"viber.{name}", value, "url"
    if v.email:
        yield "email.subject", v.email.subject, "text"
        yield "email.html", v.email.html, "html"
        if v.email.text is not None:
            yield "email.text", v.email.text, "text"
    if v.chatbot:
        yield "chatbot.text", v.chatbot.text, "text"
        for i, button in enumerate(v.chatbot.buttons):
            yield f"chatbot.buttons.{i}.text", button.text, "text"
            if button.url is not None:
                yield f"chatbot.buttons.{i}.url", button.url, "url"
    if v.ivr:
        yield "ivr.text", v.ivr.text, "speech"


def _channels(v: ChannelBodies) -> list[str]:
    return [c for c in TEMPLATE_CHANNELS if getattr(v, c) is not None]


def _structure_errors(draft: TemplateDraft) -> list[FieldError]:
    v, errors = draft.variants, []
    if not _channels(v):
        errors.append(FieldError("variants", "a template needs a body for at least one channel"))
    translations = v.translations
    own = set(_channels(v))
    for language in LANGUAGES if translations is not None else ():
        bodies = getattr(translations, language)
        at = f"variants.translations.{language}"
        if bodies is None:
            continue
        if language == draft.language:
            errors.append(
                FieldError(
                    at, f"the version's own language is {language}: its bodies belong in variants"
                )
            )
        elif not _channels(bodies):
            errors.append(FieldError(at, "a translation needs a body for at least one channel"))
        errors += [
            FieldError(
                f"{at}.{c}",
                f"the version has no {draft.language} body for this "
                "channel; a translation cannot add a channel",
            )
            for c in _channels(bodies)
            if c not in own
        ]
    for _, prefix, bodies in _languages(draft):
        viber, email = bodies.viber, bodies.email
        if viber and (viber.button_text is None) != (viber.button_url is None):
            missing = "button_url" if viber.button_url is None else "button_text"
            errors.append(
                FieldError(
                    f"{prefix}.viber.{missing}", "a Viber button needs both a caption and a link"
                )
            )
        if email and ("\n" in email.subject or "\r" in email.subject):
            errors.append(FieldError(f"{prefix}.email.subject", "a subject must be one line"))
    return errors


def _unique(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))
