"""Message templates: validation on save, sandboxed rendering, filters, compiled-template cache.

Run as a script for the rendering benchmark:
``.venv/bin/python tests/test_templates.py --bench 100000``.
"""

from __future__ import annotations

import datetime
import sys
import time
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from dispatcher.templating.env import (
    DEFAULT_VARIABLES,
    VariableCatalogue,
    build_environment,
    format_date,
    format_money,
)
from dispatcher.templating.sms_text import sms_stats
from dispatcher.templating.templates import (
    ChannelBodies,
    ChatbotButton,
    ChatbotButtonContent,
    ChatbotContent,
    ChatbotVariant,
    EmailMessage,
    EmailVariant,
    IvrVariant,
    RenderError,
    SmsCost,
    SmsVariant,
    TemplateCheck,
    TemplateDraft,
    TemplateEngine,
    TemplateInvalid,
    TemplateLimits,
    Translations,
    Variants,
    ViberVariant,
    decode_draft,
)
from herald.errors import InvalidInput
from providers.base import SmsContent, ViberContent

NB = "\u00a0"

DEBT_SMS = "{{ first_name }}, борг за ОР {{ or_number }}: {{ debt|money }}. Сплатіть до {{ due_date|date }}"
DEBT_VIBER = ViberVariant(
    text="Шановна {{ first_name }} {{ middle_name }}! Борг за рахунком {{ or_number }} "
    "({{ address }}): {{ debt|money }}. Сплатіть до {{ due_date|date }}.",
    button_text="Сплатити",
    button_url="{{ payment_url }}",
    image_url="https://cdn.example.ua/debt.png",
)
DEBT_EMAIL = EmailVariant(
    subject="Борг {{ debt|money }} за ОР {{ or_number }}",
    html=(
        "<html><head><style>p { margin: 0 }</style></head><body>\n"
        "<p>Шановна <b>{{ first_name }}</b>,</p>\n"
        "<p>борг за рахунком {{ or_number }} становить {{ debt|money }}.</p>\n"
        "{% if last_payment_amount %}<p>Остання оплата: {{ last_payment_amount|money }} "
        "({{ last_payment_date|date }}).</p>{% endif %}\n"
        '<p><a href="{{ cabinet_url }}">Особистий кабінет</a></p>\n</body></html>'
    ),
)


def draft(**variants: Any) -> TemplateDraft:
    return TemplateDraft(name="Борг", variants=Variants(**variants))


def recipient(**overrides: object) -> dict[str, object]:
    values = VariableCatalogue().examples()
    values.update(overrides)
    return values


def errors_of(engine: TemplateEngine, template: TemplateDraft) -> list[tuple[str, str, int | None]]:
    with pytest.raises(TemplateInvalid) as caught:
        engine.validate(template)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.field == caught.value.errors[0].field
    return [(e.field, e.detail, e.line) for e in caught.value.errors]


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine()


# --- filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (Decimal("1234.5"), f"1{NB}234,50{NB}грн"),
        (1234.5, f"1{NB}234,50{NB}грн"),
        (1234567, f"1{NB}234{NB}567,00{NB}грн"),
        (Decimal("0.125"), f"0,13{NB}грн"),  # half up, as accountants round
        (Decimal("-1234.50"), f"-1{NB}234,50{NB}грн"),
        (0, f"0,00{NB}грн"),
        (None, ""),
    ],
)
def test_money_prints_hryvnias_the_ukrainian_way(value: object, printed: str) -> None:
    # Given an amount, When printed with the money filter, Then spaces group thousands, comma before kopecks
    assert format_money(value) == printed


def test_money_in_english_and_refusals() -> None:
    # Given an English template or a value that is not a number, When printed, Then UAH first or an error
    assert format_money(Decimal("1234.5"), "en") == f"UAH{NB}1,234.50"
    for wrong in ("1234.50", True, float("nan")):
        with pytest.raises((TypeError, ValueError)):
            format_money(wrong)


def test_date_prints_day_month_year() -> None:
    # Given a date, a datetime, nothing or a string, When printed, Then dd.mm.yyyy, empty, or an error
    assert format_date(datetime.date(2026, 12, 25)) == "25.12.2026"
    assert format_date(datetime.datetime(2026, 1, 5, 23, 59)) == "05.01.2026"
    assert format_date(None) == ""
    with pytest.raises(TypeError):
        format_date("2026-12-25")


def test_catalogue_is_published_with_examples_of_the_right_type() -> None:
    # Given the default catalogue, When encoded for the API
    published = msgspec.json.decode(msgspec.json.encode(list(VariableCatalogue())))
    # Then every variable has both descriptions and an example of its declared type
    assert {v["name"] for v in published} >= {
        "first_name",
        "or_number",
        "debt",
        "due_date",
        "cabinet_url",
        "service_centre",
    }
    kinds = {"text": str, "url": str, "money": Decimal, "date": datetime.date}
    for v in DEFAULT_VARIABLES:
        assert v.description_uk and v.description_en
        assert isinstance(v.example, kinds[v.type]), v.name


# --- validation on save -----------------------------------------------------------


def test_valid_template_gets_a_preview_and_sms_cost(engine: TemplateEngine) -> None:
    # Given a debt template for all three channels
    template = draft(sms=SmsVariant(DEBT_SMS), viber=DEBT_VIBER, email=DEBT_EMAIL)
    # When it is validated on save
    check = engine.validate(template)
    # Then it passes with the variables it reads, a preview per channel and the SMS cost
    assert isinstance(check, TemplateCheck)
    assert "debt" in check.variables and "payment_url" in check.variables
    assert check.preview[0] == SmsContent(
        f"Мар'яна, борг за ОР 0412345678: 1{NB}234,50{NB}грн. Сплатіть до 25.12.2026"
    )
    assert check.sms is not None and check.sms == SmsCost("ucs2", 68, 1)
    assert [c.__class__ for c in check.preview] == [SmsContent, ViberContent, EmailMessage]
    # the e-mail carries the example unsubscribe link, for its List-Unsubscribe header
    email = check.preview[2]
    assert isinstance(email, EmailMessage) and email.unsubscribe_url is not None
    assert email.unsubscribe_url.startswith("https://")
    assert b'"type":"sms"' in msgspec.json.encode(check)


def test_unknown_variable_is_rejected_naming_field_and_line(engine: TemplateEngine) -> None:
    # Given a Viber text with a misspelt variable on its second line
    template = draft(viber=ViberVariant("Шановна {{ first_name }},\nваш борг {{ dept|money }}"))
    # When it is validated
    # Then the error names the field, the variable and the line
    assert errors_of(engine, template) == [("variants.viber.text", "unknown variable 'dept'", 2)]


def test_syntax_error_reports_its_line(engine: TemplateEngine) -> None:
    # Given HTML with an unclosed tag on line 3, When validated, Then the error names the field and line 3
    template = draft(
        email=EmailVariant("Тема", "<p>Рядок 1</p>\n<p>Рядок 2</p>\n<p>{{ first_name }</p>")
    )
    [(field, detail, line)] = errors_of(engine, template)
    assert (field, line) == ("variants.email.html", 3)
    assert detail.startswith("syntax error")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ first_name.__class__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self }}",
        "{{ first_name|attr('__class__') }}",
    ],
)
def test_sandbox_escapes_are_refused_on_save(engine: TemplateEngine, source: str) -> None:
    # Given a template reaching for Python internals
    # When it is validated, Then it is refused on the SMS field
    errors = errors_of(engine, draft(sms=SmsVariant(source)))
    assert errors and all(field == "variants.sms.text" for field, _, _ in errors)


def test_sandbox_still_holds_if_static_checks_were_bypassed() -> None:
    # Given the rendering environment used directly, without the save-time checks
    env = build_environment("uk", html=False)
    # When escape attempts render, Then the sandbox stops them
    with pytest.raises(SecurityError):
        env.from_string("{{ ''.__class__.__mro__ }}").render()
    with pytest.raises((UndefinedError, SecurityError)):  # no cycler, lipsum... in globals
        env.from_string("{{ cycler.__init__.__globals__ }}").render()
    with pytest.raises(SecurityError):
        env.from_string("{{ 'x' * 1000000000 }}").render()
    with pytest.raises(SecurityError):
        env.from_string("{{ '%999999999s' % 'x' }}").render()


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{% include 'secrets.txt' %}", "{% include %} is not allowed"),
        ("{% import 'macros.html' as m %}", "{% import %} is not allowed"),
        ("{% from 'm.html' import x %}", "{% import %} is not allowed"),
        ("{% extends 'base.html' %}", "{% extends %} is not allowed"),
        ("{% for c in first_name %}{{ c }}{% endfor %}", "{% for %} is not allowed"),
        ("{% macro m() %}x{% endmacro %}", "{% macro %} is not allowed"),
        ("{{ first_name.upper() }}", "calling functions or methods is not allowed"),
        ("{{ first_name|safe }}", "unknown filter 'safe'"),
        ("{{ first_name|format('x') }}", "unknown filter 'format'"),
        ("{{ 2 ** 10 }}", "the ** operator is not allowed"),
    ],
)
def test_forbidden_constructs_are_refused(engine: TemplateEngine, source: str, says: str) -> None:
    # Given a body using a construct outside the allowed set, When validated, Then it is refused on its line
    field, detail, line = errors_of(engine, draft(sms=SmsVariant(source)))[0]
    assert field == "variants.sms.text" and detail.startswith(says) and line == 1


def test_autoescape_cannot_be_switched_off_in_email(engine: TemplateEngine) -> None:
    # Given HTML that turns autoescaping off, When validated, Then it is refused
    template = draft(
        email=EmailVariant(
            "Тема", "<p>{% autoescape false %}{{ first_name }}{% endautoescape %}</p>"
        )
    )
    assert errors_of(engine, template) == [
        ("variants.email.html", "{% autoescape %} is not allowed", 1)
    ]


def test_type_errors_are_caught_by_rendering_the_examples(engine: TemplateEngine) -> None:
    # Given a money filter on a text variable, and arithmetic on an optional amount
    # When validated
    errors = errors_of(
        engine,
        draft(
            sms=SmsVariant("{{ first_name|money }}"),
            viber=ViberVariant("{{ last_payment_amount - 1 }}"),
        ),
    )
    # Then both fail on save: one with the examples, one when the optional value is empty
    assert errors == [
        ("variants.sms.text", "does not render: TypeError: money needs a number, got str", None),
        (
            "variants.viber.text",
            "does not render with the optional variables empty: TypeError: "
            "unsupported operand type(s) for -: 'NoneType' and 'int'",
            None,
        ),
    ]


def test_variable_set_only_in_a_branch_is_reported(engine: TemplateEngine) -> None:
    # Given a name set only inside an if, When validated, Then it is an unknown variable with a hint
    errors = errors_of(
        engine,
        draft(sms=SmsVariant("{% if debt > 0 %}{% set word = 'борг' %}{% endif %}{{ word }}")),
    )
    assert errors == [
        ("variants.sms.text", "unknown variable 'word' (it is set only inside a condition)", 1)
    ]


def test_too_many_sms_segments_are_refused(engine: TemplateEngine) -> None:
    # Given an SMS that renders to 5 UCS-2 parts with the example address
    template = draft(sms=SmsVariant("{{ address }}. " * 8))
    # When validated with the default limit of 4 parts, Then it is refused with its cost
    [(field, detail, _)] = errors_of(engine, template)
    assert field == "variants.sms.text"
    assert detail.startswith("5 SMS segments with the example values (ucs2,")
    # ...and a transliterated version of the same fits in GSM-7
    latin = TemplateEngine(limits=TemplateLimits(max_sms_segments=3)).validate(
        draft(sms=SmsVariant("{{ address }}. " * 8, transliterate="uk"))
    )
    assert latin.sms is not None and latin.sms.encoding == "gsm7"


def test_viber_button_needs_caption_and_link(engine: TemplateEngine) -> None:
    # Given a button with only a caption, or only a link, When validated, Then the missing half is named
    assert errors_of(engine, draft(viber=ViberVariant("Текст", button_text="Сплатити"))) == [
        ("variants.viber.button_url", "a Viber button needs both a caption and a link", None)
    ]
    assert errors_of(engine, draft(viber=ViberVariant("Текст", button_url="https://pay.ua"))) == [
        ("variants.viber.button_text", "a Viber button needs both a caption and a link", None)
    ]


@pytest.mark.parametrize(
    ("field", "variant"),
    [
        ("button_url", ViberVariant("Т", button_text="Так", button_url="http://pay.example.ua")),
        ("button_url", ViberVariant("Т", button_text="Так", button_url="javascript:alert(1)")),
        ("button_url", ViberVariant("Т", button_text="Так", button_url="{{ address }}")),
        ("image_url", ViberVariant("Т", image_url="ftp://cdn.example.ua/a.png")),
        ("image_url", ViberVariant("Т", image_url="https://{{ or_number }}.example.ua/a.png")),
        (
            "button_url",
            ViberVariant("Т", button_text="Так", button_url="{{ cabinet_url }}@evil.example"),
        ),
    ],
)
def test_viber_links_must_be_https(
    engine: TemplateEngine, field: str, variant: ViberVariant
) -> None:
    # Given a link whose scheme or host is not fixed https, When validated, Then its field is refused
    [(found, detail, _)] = errors_of(engine, draft(viber=variant))
    assert found == f"variants.viber.{field}" and "https://" in detail


def test_email_links_must_be_https(engine: TemplateEngine) -> None:
    # Given links in HTML, When validated
    # Then http and client-built links are refused; mailto and link variables pass
    html = (
        '<a href="http://x.ua">a</a><img src="{{ or_number }}.png">'
        '<a href="mailto:info@example.ua">b</a><a href="{{ cabinet_url }}/pay">c</a>'
    )
    errors = errors_of(engine, draft(email=EmailVariant("Тема", html)))
    assert [(f, d.split("'")[1]) for f, d, _ in errors] == [
        ("variants.email.html", "http://x.ua"),
        ("variants.email.html", "{{ or_number }}.png"),
    ]


def test_structure_errors(engine: TemplateEngine) -> None:
    # Given no channel at all, or a two-line subject, When validated, Then the structure is refused
    assert errors_of(engine, draft()) == [
        ("variants", "a template needs a body for at least one channel", None)
    ]
    assert errors_of(engine, draft(email=EmailVariant("Рядок\nдругий", "<p>x</p>"))) == [
        ("variants.email.subject", "a subject must be one line", None)
    ]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b'{"name": "x", "variants": {"sms": {"text": 5}}}', "variants.sms.text", "Expected `str`"),
        (b'{"name": "x", "variants": {"sms": {"text": ""}}}', "variants.sms.text", "length >= 1"),
        (
            b'{"name": "x", "variants": {"viber": {"text": "a", "buton_url": "b"}}}',
            "variants.viber",
            "unknown field `buton_url`",
        ),
        (b'{"name": "x", "language": "ru", "variants": {}}', "language", "Invalid enum value 'ru'"),
        (b'{"name": "x", "variants": ', "body", "truncated"),
    ],
)
def test_decoding_the_api_body_names_the_field(body: bytes, field: str, says: str) -> None:
    # Given a malformed API body, When decoded, Then the error names the dotted field path
    with pytest.raises(TemplateInvalid) as caught:
        decode_draft(body)
    assert caught.value.field == field and says in caught.value.detail


# --- rendering --------------------------------------------------------------------


def test_apostrophes_in_names_survive_every_channel(engine: TemplateEngine) -> None:
    # Given names typed with ' and with ʼ, and a template that title-cases and upper-cases
    compiled = engine.compile(
        draft(
            sms=SmsVariant("{{ first_name|title }} / {{ last_name|upper }}"),
            email=EmailVariant("{{ first_name }}", "<p>{{ first_name }}</p>"),
        )
    )
    for typed, title in (("мар'яна", "Мар'яна"), ("марʼяна", "Марʼяна")):
        # When rendered
        sms = compiled.render_sms(recipient(first_name=typed, last_name="Дем'яненко"))
        email = compiled.render_email(recipient(first_name=title))
        # Then the apostrophe stays inside the word (no "Мар'Яна") and is escaped only in HTML
        assert sms.text == f"{title} / ДЕМ'ЯНЕНКО"
        assert email.subject == title and email.text == title
        assert email.html == "<p>" + title.replace("'", "&#39;") + "</p>"


def test_client_data_is_escaped_in_email_html_only(engine: TemplateEngine) -> None:
    # Given a client whose name contains markup
    compiled = engine.compile(draft(email=DEBT_EMAIL, sms=SmsVariant("{{ first_name }}")))
    hostile = recipient(first_name='<img src=x onerror="alert(1)">Ів&ан')
    # When the e-mail is rendered
    email = compiled.render_email(hostile)
    # Then the HTML carries it escaped, the text part and the SMS carry it as typed
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;Ів&amp;ан" in email.html
    assert "<img" not in email.html
    assert email.text.startswith('Шановна <img src=x onerror="alert(1)">Ів&ан,')
    assert compiled.render_sms(hostile).text.startswith("<img")


def test_email_text_is_derived_from_html(engine: TemplateEngine) -> None:
    # Given an e-mail with HTML only, When rendered, Then the text part follows the HTML, links in brackets
    compiled = engine.compile(draft(email=DEBT_EMAIL))
    email = compiled.render_email(recipient())
    assert email.text == (
        f"Шановна Мар'яна,\n\nборг за рахунком 0412345678 становить 1{NB}234,50{NB}грн.\n\n"
        f"Остання оплата: 500,00{NB}грн (20.11.2026).\n\n"
        "Особистий кабінет (https://my.example.ua)"
    )
    sparse = compiled.render_email(recipient(last_payment_amount=None, last_payment_date=None))
    assert "Остання оплата" not in sparse.text and "Остання оплата" not in sparse.html
    assert sparse.text.endswith("грн.\n\nОсобистий кабінет (https://my.example.ua)")


def test_derived_text_shows_a_link_once_when_its_text_is_the_link(engine: TemplateEngine) -> None:
    # Given a list, a self-describing link and entities, When rendered, Then the text part reads naturally
    compiled = engine.compile(
        draft(
            email=EmailVariant(
                "Тема",
                (
                    '<ul><li>Кабінет: <a href="{{ cabinet_url }}">{{ cabinet_url }}</a></li>'
                    '<li><a href="mailto:info@example.ua">Напишіть нам</a></li></ul>'
                    "<p>Ціна&nbsp;газу &mdash; {{ tariff_price|money }}</p>"
                ),
            )
        )
    )
    assert compiled.render_email(recipient()).text == (
        f"- Кабінет: https://my.example.ua\n- Напишіть нам\n\nЦіна{NB}газу — 7,96{NB}грн"
    )


def test_subject_is_forced_onto_one_line(engine: TemplateEngine) -> None:
    # Given client data with a line break in the subject, When rendered, Then the subject stays one line
    compiled = engine.compile(draft(email=EmailVariant("Вітаємо, {{ full_name }}", "<p>x</p>")))
    email = compiled.render_email(recipient(full_name="Коваленко\r\nBcc: all@example.ua"))
    assert email.subject == "Вітаємо, Коваленко Bcc: all@example.ua"
    check = engine.validate(draft(email=DEBT_EMAIL))
    preview = check.preview[0]
    assert isinstance(preview, EmailMessage)
    assert preview.subject == f"Борг 1{NB}234,50{NB}грн за ОР 0412345678"


def test_viber_render_and_runtime_link_check(engine: TemplateEngine) -> None:
    compiled = engine.compile(draft(viber=DEBT_VIBER))
    # Given an optional middle name that is empty, Then no stray space is left behind
    viber = compiled.render_viber(recipient(middle_name=""))
    assert viber.text.startswith("Шановна Мар'яна! Борг")
    assert (viber.button_text, viber.button_url, viber.image_url) == (
        "Сплатити",
        "https://pay.example.ua/0412345678",
        "https://cdn.example.ua/debt.png",
    )
    # Given a link variable configured as plain http, Then that recipient's render fails
    with pytest.raises(RenderError) as caught:
        compiled.render_viber(recipient(payment_url="http://pay.example.ua"))
    assert caught.value.field == "variants.viber.button_url"


def test_missing_text_prints_empty_even_through_filters(engine: TemplateEngine) -> None:
    # Given a recipient whose middle name is NULL in the database (None, not "")
    compiled = engine.compile(
        draft(
            sms=SmsVariant(
                "{{ first_name }} {{ middle_name }}|{{ middle_name|upper }}|{{ middle_name|truncate(5) }}|"
                "{{ middle_name|title|trim }}|{{ last_payment_date|date }}|{{ last_payment_amount|money }}"
            )
        )
    )
    # When rendered
    sms = compiled.render_sms(
        recipient(middle_name=None, last_payment_date=None, last_payment_amount=None)
    )
    # Then nothing prints "None" or "NONE"
    assert sms.text == "Мар'яна |||||"


def test_missing_or_bad_recipient_data_raises_render_error(engine: TemplateEngine) -> None:
    # Given a recipient missing a variable or with a wrong type, or a channel without a body
    # When rendered, Then RenderError names the field
    compiled = engine.compile(draft(sms=SmsVariant(DEBT_SMS)))
    values = recipient()
    del values["or_number"]
    with pytest.raises(RenderError, match=r"variants\.sms\.text: UndefinedError"):
        compiled.render("sms", values)
    with pytest.raises(RenderError, match="money needs a number"):
        compiled.render("sms", recipient(debt="1234.50"))
    with pytest.raises(RenderError, match="no body for this channel"):
        compiled.render("viber", recipient())


def test_transliterated_sms_and_english_template(engine: TemplateEngine) -> None:
    # Given a transliterated Ukrainian SMS and an English one, When rendered, Then Latin text and UAH first
    uk = engine.compile(draft(sms=SmsVariant(DEBT_SMS, transliterate="uk")))
    assert uk.render_sms(recipient(first_name="Юрій")).text == (
        "Yurii, borh za OR 0412345678: 1 234,50 hrn. Splatit do 25.12.2026"
    )
    en = engine.compile(
        TemplateDraft(
            "Debt",
            Variants(
                sms=SmsVariant("{{ first_name }}, you owe {{ debt|money }} by {{ due_date|date }}")
            ),
            language="en",
        )
    )
    assert en.render_sms(recipient(first_name="Yurii")).text == (
        f"Yurii, you owe UAH{NB}1,234.50 by 25.12.2026"
    )


def test_compiled_templates_are_cached_by_id_version_and_language() -> None:
    # Given a cache of two, When versions are compiled, Then the same object is reused and the oldest evicted
    engine = TemplateEngine(cache_size=2)
    v1, v2 = draft(sms=SmsVariant("v1 {{ first_name }}")), draft(sms=SmsVariant("v2"))
    assert engine.cached(7, 1, "uk") is None
    first = engine.compiled(7, 1, v1)
    assert engine.compiled(7, 1, v1) is first and engine.cached(7, 1, "uk") is first
    assert engine.compiled(7, 2, v2).render_sms({}).text == "v2"
    assert first.variables == frozenset({"first_name"}) and first.channels == ("sms",)
    engine.compiled(8, 1, v2)  # a third entry evicts the least recently used (7, 1)
    assert engine.cached(7, 1, "uk") is None and engine.cached(7, 2, "uk") is not None


def test_compile_refuses_a_stored_template_that_no_longer_validates() -> None:
    # Given a template saved when the catalogue still had "bonus"
    old = draft(sms=SmsVariant("{{ bonus }}"))
    # When a campaign compiles it against today's catalogue, Then it fails before sending
    with pytest.raises(TemplateInvalid, match="unknown variable 'bonus'"):
        TemplateEngine().compiled(1, 3, old)


# --- chatbot, IVR, languages ----------------------------------------------------------


def _bilingual(**extra: Any) -> TemplateDraft:
    return TemplateDraft(
        "Борг",
        Variants(
            sms=SmsVariant("{{ first_name }}, борг {{ debt|money }}"),
            viber=ViberVariant("Борг {{ debt|money }} ({{ region }})"),
            translations=Translations(
                en=ChannelBodies(
                    sms=SmsVariant("{{ first_name }}, you owe {{ debt|money }} ({{ region }})")
                )
            ),
            **extra,
        ),
    )


def test_chatbot_variant_renders_text_and_buttons(engine: TemplateEngine) -> None:
    # Given a chatbot body with a link button and a quick-reply button
    template = draft(
        chatbot=ChatbotVariant(
            "{{ first_name }}, борг {{ debt|money }}.",
            buttons=(ChatbotButton("Сплатити", "{{ payment_url }}"), ChatbotButton("Вже сплатив")),
        )
    )
    # When validated and rendered
    check = engine.validate(template)
    rendered = engine.compile(template).render("chatbot", recipient())
    # Then the preview and the render carry the text and both buttons
    assert check.preview == (rendered,)
    assert rendered == ChatbotContent(
        f"Мар'яна, борг 1{NB}234,50{NB}грн.",
        (
            ChatbotButtonContent("Сплатити", "https://pay.example.ua/0412345678"),
            ChatbotButtonContent("Вже сплатив", None),
        ),
    )
    assert b'"type":"chatbot"' in msgspec.json.encode(rendered)


def test_chatbot_validation(engine: TemplateEngine) -> None:
    # Given a button link over http, When validated, Then refused at its field
    [(field, detail, _)] = errors_of(
        engine,
        draft(
            chatbot=ChatbotVariant("Т", buttons=(ChatbotButton("Так", "http://pay.example.ua"),))
        ),
    )
    assert field == "variants.chatbot.buttons.0.url" and "https://" in detail
    # Given too many buttons, or a caption too long with the example name, Then each is refused
    assert errors_of(
        engine,
        draft(chatbot=ChatbotVariant("Т", buttons=tuple(ChatbotButton(f"{i}") for i in range(9)))),
    ) == [("variants.chatbot.buttons", "9 buttons; at most 8", None)]
    [(field, detail, _)] = errors_of(
        engine,
        draft(
            chatbot=ChatbotVariant(
                "Т",
                buttons=(ChatbotButton("Так"), ChatbotButton("{{ full_name }}, {{ full_name }}")),
            )
        ),
    )
    assert field == "variants.chatbot.buttons.1.text"
    assert detail == "a button caption must have 1 to 40 characters, has 54"


def test_ivr_text_is_plain_speech_without_links(engine: TemplateEngine) -> None:
    # Given an IVR text, When rendered, Then it is one plain line and markup from client data is dropped
    compiled = engine.compile(
        draft(ivr=IvrVariant("Шановна {{ first_name }}!\nВаш борг становить {{ debt|money }}."))
    )
    assert compiled.render_ivr(recipient(first_name="<speak>Ніна</speak>")).text == (
        f"Шановна speak Ніна /speak! Ваш борг становить 1{NB}234,50{NB}грн."
    )
    # Given links or markup in the IVR text, When validated, Then they are refused
    for source, says in (
        ("Оплата: {{ payment_url }}", "cannot carry links (payment_url)"),
        ("Сайт https://gas.ua", "cannot carry links"),
        ("Сайт www.gas.ua", "cannot carry links"),
        ('<break time="1s"/>Борг', "no markup"),
    ):
        [(field, detail, _)] = errors_of(engine, draft(ivr=IvrVariant(source)))
        assert field == "variants.ivr.text" and says in detail, (source, detail)


def test_ivr_length_limit(engine: TemplateEngine) -> None:
    # Given an IVR text longer than the limit with the example address, When validated, Then refused
    [(field, detail, _)] = errors_of(engine, draft(ivr=IvrVariant("{{ address }}. " * 30)))
    assert field == "variants.ivr.text" and "at most 1000" in detail


def test_unsubscribe_link_only_in_email(engine: TemplateEngine) -> None:
    # Given the unsubscribe link in an SMS, When validated, Then refused; in an e-mail it is fine
    [(field, detail, _)] = errors_of(
        engine, draft(sms=SmsVariant("Відписка: {{ unsubscribe_url }}"))
    )
    assert field == "variants.sms.text" and "only in the e-mail body" in detail
    check = engine.validate(
        draft(
            email=EmailVariant("Новини", '<p>x</p><a href="{{ unsubscribe_url }}">Відписатися</a>')
        )
    )
    assert "unsubscribe_url" in check.variables


def test_language_variants_and_fallback(engine: TemplateEngine) -> None:
    # Given a version in Ukrainian with an English SMS translation
    template = _bilingual()
    compiled = engine.compile(template)
    assert compiled.languages == ("uk", "en") and compiled.channels == ("sms", "viber")
    # When an English client gets the SMS, Then the English body with English money and region
    values = recipient(region_en="Kyiv Oblast")
    assert (
        compiled.render_sms(values, "en").text == f"Мар'яна, you owe UAH{NB}1,234.50 (Kyiv Oblast)"
    )
    # ...on Viber (no English body), and for a client without a language, Then Ukrainian
    assert compiled.language_for("viber", "en") == "uk"
    assert compiled.render_viber(values, "en").text == f"Борг 1{NB}234,50{NB}грн (Київська область)"
    assert compiled.render_sms(values).text == f"Мар'яна, борг 1{NB}234,50{NB}грн"
    # ...and the check on save previews and prices each language
    check = engine.validate(template)
    assert check.sms == SmsCost("ucs2", 26, 1)
    assert check.translations["en"].preview == (
        SmsContent(f"Мар'яна, you owe UAH{NB}1,234.50 (Київська область)"),
    )
    assert check.translations["en"].sms == SmsCost("ucs2", 48, 1)


def test_english_version_with_ukrainian_translation_falls_back_to_ukrainian(
    engine: TemplateEngine,
) -> None:
    # Given an English-first version with a Ukrainian SMS
    compiled = engine.compile(
        TemplateDraft(
            "Debt",
            Variants(
                sms=SmsVariant("You owe {{ debt|money }}"),
                email=EmailVariant("Debt", "<p>Debt</p>"),
                translations=Translations(
                    uk=ChannelBodies(sms=SmsVariant("Борг {{ debt|money }}"))
                ),
            ),
            language="en",
        )
    )
    # When a client of unknown language gets it, Then Ukrainian where there is one, else English
    assert compiled.render_sms(recipient()).text == f"Борг 1{NB}234,50{NB}грн"
    assert compiled.render_sms(recipient(), "en").text == f"You owe UAH{NB}1,234.50"
    assert compiled.language_for("email", None) == "en"


def test_translation_structure_errors(engine: TemplateEngine) -> None:
    # Given translations that add a channel, repeat the own language, or are empty
    errors = errors_of(
        engine,
        TemplateDraft(
            "Борг",
            Variants(
                sms=SmsVariant("Борг"),
                translations=Translations(
                    uk=ChannelBodies(sms=SmsVariant("Борг")),
                    en=ChannelBodies(viber=ViberVariant("Debt", button_text="Pay")),
                ),
            ),
        ),
    )
    # Then each is named at its field
    assert [(f, d.split(":")[0].split(";")[0]) for f, d, _ in errors] == [
        ("variants.translations.uk", "the version's own language is uk"),
        ("variants.translations.en.viber", "the version has no uk body for this channel"),
        (
            "variants.translations.en.viber.button_url",
            "a Viber button needs both a caption and a link",
        ),
    ]
    assert errors_of(
        engine,
        TemplateDraft(
            "Борг", Variants(sms=SmsVariant("Борг"), translations=Translations(en=ChannelBodies()))
        ),
    )[0][:2] == ("variants.translations.en", "a translation needs a body for at least one channel")


def test_translation_errors_name_the_translated_field(engine: TemplateEngine) -> None:
    # Given an English SMS with an unknown variable and one too long
    errors = errors_of(
        engine,
        TemplateDraft(
            "Борг",
            Variants(
                sms=SmsVariant("Борг"),
                viber=ViberVariant("Борг"),
                translations=Translations(
                    en=ChannelBodies(
                        sms=SmsVariant("{{ address }} " * 30), viber=ViberVariant("{{ dept }}")
                    )
                ),
            ),
        ),
    )
    # Then the errors point into variants.translations.en
    assert [(f, d.split(" (")[0]) for f, d, _ in errors] == [
        ("variants.translations.en.viber.text", "unknown variable 'dept'"),
    ]
    [(field, detail, _)] = errors_of(
        engine,
        TemplateDraft(
            "Борг",
            Variants(
                sms=SmsVariant("Борг"),
                translations=Translations(en=ChannelBodies(sms=SmsVariant("{{ address }} " * 30))),
            ),
        ),
    )
    assert field == "variants.translations.en.sms.text" and "SMS segments" in detail


def test_transliteration_is_per_variant_and_segments_count_the_latin_text(
    engine: TemplateEngine,
) -> None:
    # Given the same Ukrainian SMS with and without transliteration, 2 UCS-2 parts long
    text = "{{ full_name }}, борг за ОР {{ or_number }} ({{ address }}): {{ debt|money }}."
    plain = engine.validate(draft(sms=SmsVariant(text)))
    latin = engine.validate(draft(sms=SmsVariant(text, transliterate="uk")))
    # Then the cost on save is counted on what is sent: fewer GSM-7 parts for the Latin one
    assert plain.sms == SmsCost("ucs2", 105, 2)
    assert latin.sms == SmsCost("gsm7", 109, 1)
    # ...and the send renders the Latin text, whose stats are the ones reported
    sent = engine.compile(draft(sms=SmsVariant(text, transliterate="uk"))).render_sms(recipient())
    assert sent.text.startswith("Kovalenko Mariana Olehivna, borh za OR 0412345678")
    assert SmsCost(*sms_stats(sent.text)) == latin.sms
    # ...also in a translation, which has its own option
    bilingual = engine.compile(
        TemplateDraft(
            "Борг",
            Variants(
                sms=SmsVariant("Борг {{ first_name }}"),
                translations=Translations(
                    en=ChannelBodies(sms=SmsVariant("Debt {{ first_name }}", transliterate="uk"))
                ),
            ),
        )
    )
    assert bilingual.render_sms(recipient(), "en").text == "Debt Mariana"
    assert bilingual.render_sms(recipient()).text == "Борг Мар'яна"


def test_versions_stored_before_translations_decode_and_render(engine: TemplateEngine) -> None:
    # Given the JSON of a version saved before chatbot, IVR and translations existed
    stored = (
        '{"sms": {"text": "Борг {{ debt|money }}", "transliterate": null}, '
        '"viber": null, "email": null}'
    ).encode()
    variants = msgspec.json.decode(stored, type=Variants)
    # When decoded and compiled as the sender does, Then it renders as before
    compiled = engine.compiled(1, 1, TemplateDraft("Старий", variants))
    assert compiled.render("sms", recipient()) == SmsContent(f"Борг 1{NB}234,50{NB}грн")
    # and the new shape of the same draft keeps the channels at the top level
    assert msgspec.to_builtins(variants)["sms"]["text"] == "Борг {{ debt|money }}"


def test_new_variants_decode_errors_name_the_field() -> None:
    # Given API bodies with a bad language key or a bad button, When decoded, Then the field is named
    with pytest.raises(TemplateInvalid) as caught:
        decode_draft(
            b'{"name": "x", "variants": {"sms": {"text": "a"}, '
            b'"translations": {"ru": {"sms": {"text": "b"}}}}}'
        )
    assert (
        caught.value.field == "variants.translations"
        and "unknown field `ru`" in caught.value.detail
    )
    with pytest.raises(TemplateInvalid) as caught:
        decode_draft(
            b'{"name": "x", "variants": {"chatbot": {"text": "a", "buttons": [{"url": "b"}]}}}'
        )
    assert caught.value.field == "variants.chatbot.buttons.0" and "text" in caught.value.detail


# --- benchmark (not a test) ---------------------------------------------------------


def bench(n: int) -> None:
    """Render the realistic debt template on each channel for ``n`` recipients; print renders/s.

    Rates are per second of this process's CPU time, so that other work on a shared
    machine does not skew them; rendering is single-threaded and CPU-bound.
    """
    engine = TemplateEngine()
    compiled = engine.compiled(
        1, 1, draft(sms=SmsVariant(DEBT_SMS), viber=DEBT_VIBER, email=DEBT_EMAIL)
    )
    latin = engine.compiled(1, 2, draft(sms=SmsVariant(DEBT_SMS, transliterate="uk")))
    base = recipient()
    names = ("Мар'яна", "Юрій", "Олександр", "Ярослава")
    rows = [
        {
            **base,
            "or_number": f"{i:010d}",
            "debt": Decimal(i % 100_000) / 7,
            "first_name": names[i % 4],
        }
        for i in range(n)
    ]
    results = {}
    runs = [(c, compiled, c) for c in compiled.channels] + [("sms_transliterated", latin, "sms")]
    for label, template, channel in runs:
        render = template.render
        started = time.process_time()
        for i, row in enumerate(rows, 1):
            render(channel, row)
            if i % 20_000 == 0:
                print(f"  {label}: {i:,}/{n:,}", file=sys.stderr, end="\r", flush=True)
        seconds = time.process_time() - started
        print(file=sys.stderr)
        results[label] = {
            "renders_per_s": round(n / seconds),
            "us_per_render": round(seconds / n * 1e6, 2),
        }
    print(msgspec.json.encode({"recipients": n, **results}).decode())


if __name__ == "__main__":
    bench(int(sys.argv[sys.argv.index("--bench") + 1]) if "--bench" in sys.argv else 100_000)
