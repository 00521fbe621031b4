"""Message templates: what the API accepts, validation on save, compiled rendering for sends.

A template has one body per channel (SMS, Viber, e-mail) in one language. It is checked
completely when it is saved (syntax, unknown variables, forbidden constructs, link
schemes, SMS segments, a render with the catalogue's example values), so a campaign
never discovers a broken template at its 5-millionth message. For sending, a template
is compiled once per (template id, version, language) and each recipient costs one
jinja2 render per field that has tags (a field without tags is a plain string), with no
parsing, no copying of the variables and no globals.

Speed (``python tests/test_templates.py --bench 100000``, one core): jinja2's per-call
cost (a Context per field, ~2.5 µs) is most of a small field's render; a hand-made
fast path for tag-light bodies was measured to save ~3 µs per field, about 1-4 % of
the per-message budget of a 5 M campaign, so it was left out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Annotated

import msgspec
from jinja2 import Template, TemplateSyntaxError

from crm.errors import HeraldError, InvalidInput
from dispatcher.sms_text import TransliterationTable, sms_stats, transliterate
from dispatcher.template_env import (
    LANGUAGES, Language, TemplateSandbox, VariableCatalogue, build_environment, check_source,
    constant_text, is_https, link_source_ok, read_html,
)
from providers.base import Channel, Content, EmailContent, SmsContent, ViberContent


ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
BodyText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
HtmlBody = Annotated[str, msgspec.Meta(min_length=1, max_length=500_000)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=200_000)]


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


class Variants(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One body per channel; a template needs at least one."""

    sms: SmsVariant | None = None
    viber: ViberVariant | None = None
    email: EmailVariant | None = None


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


class FieldError(msgspec.Struct, frozen=True):
    """One problem with a template, at a dotted field path such as ``variants.sms.text``."""

    field: str
    detail: str
    line: int | None = None


class TemplateInvalid(InvalidInput):
    """A template failed validation; ``errors`` lists every problem, ``field`` is the first."""

    def __init__(self, errors: list[FieldError]) -> None:
        first = errors[0]
        where = f" (line {first.line})" if first.line else ""
        super().__init__(first.field, first.detail + where)
        self.errors = errors


class RenderError(HeraldError):
    """One recipient's message could not be rendered (bad data); the template itself is valid."""

    code = "render-error"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.reason = detail


class SmsCost(msgspec.Struct, frozen=True):
    """What the SMS body costs with the example values: encoding, characters, segments."""

    encoding: str
    characters: int
    segments: int


class TemplateCheck(msgspec.Struct, frozen=True):
    """The result of a successful validation: variables used, example preview, SMS cost."""

    variables: tuple[str, ...]
    preview: tuple[Content, ...]
    sms: SmsCost | None = None


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
            return "".join(template.root_render_func(  # type: ignore[union-attr]
                template.new_context(variables, shared=True)))  # type: ignore[union-attr,arg-type]
        except Exception as exc:  # one recipient's bad data must not stop a batch
            raise RenderError(self.field, f"{type(exc).__name__}: {exc}") from exc


def _squeeze(text: str) -> str:
    """Trim a short message and drop the spaces an empty variable left ("Мар'яна !")."""
    return _LOOSE_SPACES.sub("", text.strip())


class CompiledTemplate:
    """A validated template compiled once, rendering one recipient's message per call."""

    def __init__(self, language: Language, parts: dict[str, _Part],
                 transliteration: TransliterationTable | None, variables: frozenset[str]) -> None:
        self.language = language
        self.variables = variables  # the catalogue names the template reads: load only these
        self.channels: tuple[Channel, ...] = tuple(
            c for c in ("sms", "viber", "email") if any(k.startswith(f"variants.{c}.") for k in parts))
        self._parts = parts
        self._transliteration = transliteration
        self._viber_extras = [(name, parts.get(f"variants.viber.{name}"))
                              for name in ("button_text", "button_url", "image_url")]

    def render(self, channel: Channel, variables: Mapping[str, object]) -> Content:
        """Render this template's body for ``channel`` with one recipient's variables."""
        if channel == "sms":
            return self.render_sms(variables)
        if channel == "viber":
            return self.render_viber(variables)
        return self.render_email(variables)

    def _part(self, field: str) -> _Part:
        try:
            return self._parts[field]
        except KeyError:
            raise RenderError(field, "the template has no body for this channel") from None

    def render_sms(self, variables: Mapping[str, object]) -> SmsContent:
        """Render the SMS text, squeezed of extra spaces and transliterated if the template says so."""
        text = _squeeze(self._part("variants.sms.text").render(variables))
        if self._transliteration is not None:
            text = transliterate(text, self._transliteration)
        return SmsContent(text)

    def render_viber(self, variables: Mapping[str, object]) -> ViberContent:
        """Render the Viber text, button and image; a link that is not https is refused."""
        text = _squeeze(self._part("variants.viber.text").render(variables))
        extras: list[str | None] = []
        for name, part in self._viber_extras:
            value = part.render(variables).strip() if part is not None else None
            if value is not None and name != "button_text" and not value.startswith("https://"):
                raise RenderError(f"variants.viber.{name}", "the link is not an https:// URL")
            extras.append(value)
        return ViberContent(text, *extras)

    def render_email(self, variables: Mapping[str, object]) -> EmailContent:
        """Render the subject (forced onto one line), the HTML (escaped) and the text part."""
        subject = _squeeze(self._part("variants.email.subject").render(variables).translate(_LINE_BREAKS))
        html = self._parts["variants.email.html"].render(variables)
        text = self._parts["variants.email.text"].render(variables).strip()
        if "\n\n\n" in text:  # a false {% if %} between paragraphs
            text = _BLANK_LINES.sub("\n\n", text)
        return EmailContent(subject, html, text)


class TemplateEngine:
    """Validates templates on save and compiles them for sending, keeping compiled ones cached.

    Built once per process with the catalogue and limits (settings later); holds one
    sandboxed environment per language and body kind, and an LRU of compiled templates
    keyed by (template id, version, language).
    """

    def __init__(self, catalogue: VariableCatalogue | None = None,
                 limits: TemplateLimits | None = None, cache_size: int = 256) -> None:
        self.catalogue = catalogue or VariableCatalogue()
        self.limits = limits or TemplateLimits()
        self._envs = {(lang, html): build_environment(lang, html=html)
                      for lang in LANGUAGES for html in (False, True)}
        self._cache: OrderedDict[tuple[object, int, str], CompiledTemplate] = OrderedDict()
        self._cache_size = cache_size

    def cached(self, template_id: object, version: int, language: Language) -> CompiledTemplate | None:
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
        parts: dict[str, _Part] = {}
        used: set[str] = set()
        for field, source, kind in _fields(draft):
            if kind == "url" and not link_source_ok(source, self.catalogue):
                errors.append(FieldError(field, "a link must start with https:// or with a link "
                                         "variable such as {{ cabinet_url }}"))
            compiled = self._compile_part(self._envs[(draft.language, kind == "html")], field,
                                          source, errors, used)
            if compiled is None:
                continue
            parts[field] = compiled
            if kind == "html":
                text_source, links = read_html(source)
                errors += self._check_links(field, links)
                if draft.variants.email and draft.variants.email.text is None:
                    derived = self._compile_part(self._envs[(draft.language, False)], field,
                                                 text_source, errors, used)
                    if derived is not None:
                        parts["variants.email.text"] = derived
        if errors:
            raise TemplateInvalid(_unique(errors))
        sms = draft.variants.sms
        return CompiledTemplate(draft.language, parts, sms.transliterate if sms else None,
                                frozenset(used))

    def validate(self, draft: TemplateDraft) -> TemplateCheck:
        """Check a template completely before it is saved; raise TemplateInvalid listing every problem."""
        errors = _structure_errors(draft)
        try:
            compiled = self.compile(draft)
        except TemplateInvalid as exc:
            errors += exc.errors
        if errors:
            raise TemplateInvalid(_unique(errors))
        preview: list[Content] = []
        sms_cost: SmsCost | None = None
        failed: set[str] = set()
        for label, variables in (("", self.catalogue.examples()),
                                 (" with the optional variables empty", self.catalogue.sparse_examples())):
            for channel in compiled.channels:
                try:
                    content = compiled.render(channel, variables)
                except RenderError as exc:
                    if exc.field not in failed:  # report the first way a body fails, once
                        failed.add(exc.field)
                        errors.append(FieldError(exc.field, f"does not render{label}: {exc.reason}"))
                    continue
                found = [e for e in self._content_errors(content, label) if e.field not in failed]
                failed.update(e.field for e in found)
                errors += found
                if not label:
                    preview.append(content)
                    if isinstance(content, SmsContent):
                        sms_cost = SmsCost(*sms_stats(content.text))
        if errors:
            raise TemplateInvalid(_unique(errors))
        return TemplateCheck(tuple(sorted(compiled.variables)), tuple(preview), sms_cost)

    def _compile_part(self, env: TemplateSandbox, field: str, source: str,
                      errors: list[FieldError], used: set[str]) -> _Part | None:
        tree, found, reads = check_source(env, source, self.catalogue)
        errors += [FieldError(field, f.detail, f.line) for f in found]
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

    def _check_links(self, field: str, links: list[tuple[str, str]]) -> list[FieldError]:
        bad = [value for name, value in links if not link_source_ok(value, self.catalogue)
               and not (name == "href" and value.startswith(("mailto:", "tel:", "#")))]
        return [FieldError(field, f"link '{value[:80]}' must start with https:// or a link variable")
                for value in bad]

    def _content_errors(self, content: Content, label: str) -> list[FieldError]:
        limits, errors = self.limits, []
        if isinstance(content, SmsContent):
            stats = sms_stats(content.text)
            if not content.text:
                errors.append(FieldError("variants.sms.text", f"renders empty{label}"))
            elif stats.segments > limits.max_sms_segments:
                errors.append(FieldError("variants.sms.text", (
                    f"{stats.segments} SMS segments{label or ' with the example values'} "
                    f"({stats.encoding}, {stats.characters} characters); at most "
                    f"{limits.max_sms_segments} allowed")))
        elif isinstance(content, ViberContent):
            if not content.text:
                errors.append(FieldError("variants.viber.text", f"renders empty{label}"))
            elif len(content.text) > limits.max_viber_text:
                errors.append(FieldError("variants.viber.text", (
                    f"{len(content.text)} characters{label}; Viber takes at most "
                    f"{limits.max_viber_text}")))
            if content.button_text is not None and not (
                    0 < len(content.button_text) <= limits.max_viber_button_text):
                errors.append(FieldError("variants.viber.button_text", (
                    f"a button caption must have 1 to {limits.max_viber_button_text} "
                    f"characters, has {len(content.button_text)}{label}")))
            for name in ("button_url", "image_url"):
                url = getattr(content, name)
                if url is not None and not is_https(url):
                    errors.append(FieldError(f"variants.viber.{name}",
                                             f"renders to '{url[:80]}', not an https:// URL{label}"))
        elif isinstance(content, EmailContent):
            for name in ("subject", "html"):
                if not getattr(content, name).strip():
                    errors.append(FieldError(f"variants.email.{name}", f"renders empty{label}"))
        return errors


def _fields(draft: TemplateDraft) -> Iterator[tuple[str, str, str]]:
    """Yield (field path, source, kind) for every body; kind is "text", "html" or "url"."""
    v = draft.variants
    if v.sms:
        yield "variants.sms.text", v.sms.text, "text"
    if v.viber:
        yield "variants.viber.text", v.viber.text, "text"
        if v.viber.button_text is not None:
            yield "variants.viber.button_text", v.viber.button_text, "text"
        for name in ("button_url", "image_url"):
            if (value := getattr(v.viber, name)) is not None:
                yield f"variants.viber.{name}", value, "url"
    if v.email:
        yield "variants.email.subject", v.email.subject, "text"
        yield "variants.email.html", v.email.html, "html"
        if v.email.text is not None:
            yield "variants.email.text", v.email.text, "text"


def _structure_errors(draft: TemplateDraft) -> list[FieldError]:
    v, errors = draft.variants, []
    if not (v.sms or v.viber or v.email):
        errors.append(FieldError("variants", "a template needs a body for at least one channel"))
    if v.viber and (v.viber.button_text is None) != (v.viber.button_url is None):
        missing = "button_url" if v.viber.button_url is None else "button_text"
        errors.append(FieldError(f"variants.viber.{missing}",
                                 "a Viber button needs both a caption and a link"))
    if v.email and ("\n" in v.email.subject or "\r" in v.email.subject):
        errors.append(FieldError("variants.email.subject", "a subject must be one line"))
    return errors


def _unique(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))
