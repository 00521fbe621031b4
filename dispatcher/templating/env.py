"""What a message template may refer to and contain: variables catalogue, filters, sandbox, HTML.

The catalogue is data: the admin API publishes it so the no-code builder can offer the
variables, validation checks templates against it, and its example values are rendered
on every save to catch type mistakes. The dispatcher fills one flat dict per recipient
with these names. Contract for the values: text variables are ``str`` (``""`` when the
client has no such data, e.g. no middle name); money is ``Decimal`` (or int/float);
dates are ``datetime.date``; money and dates may be ``None`` when unknown, and then
print as empty. A ``None`` text also prints as empty, through the text filters too,
but ``~`` would join it as "None", hence the ``""``.

Money prints the Ukrainian way, "1 234,50 грн": grouping and the space before "грн"
are U+00A0 NO-BREAK SPACE, not U+202F NARROW NO-BREAK SPACE, because U+00A0 is in every
handset and Viber font and in Latin-1 e-mail charsets, and keeps the sum on one line.
"""

from __future__ import annotations

import datetime
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

Language = Literal["uk", "en"]
LANGUAGES: tuple[Language, ...] = ("uk", "en")
VariableType = Literal["text", "money", "date", "url"]

NBSP = "\u00a0"


class Variable(msgspec.Struct, frozen=True):
    """One personalisation variable as the catalogue publishes it."""

    name: str
    type: VariableType
    description_uk: str
    description_en: str
    example: str | Decimal | datetime.date
    # Where the value comes from: a column of migrations/0003 or "settings" (a constant
    # the caller supplies from configuration, the same for every recipient).
    source: str
    nullable: bool = False


def _v(
    name: str,
    type_: VariableType,
    uk: str,
    en: str,
    example: Any,
    source: str,
    nullable: bool = False,
) -> Variable:
    return Variable(name, type_, uk, en, example, source, nullable)


DEFAULT_VARIABLES: tuple[Variable, ...] = (
    _v("first_name", "text", "Ім'я", "First name", "Мар'яна", "clients.first_name"),
    _v("middle_name", "text", "По батькові", "Patronymic", "Олегівна", "clients.middle_name", True),
    _v("last_name", "text", "Прізвище", "Last name", "Коваленко", "clients.last_name"),
    _v(
        "full_name",
        "text",
        "Прізвище, ім'я та по батькові",
        "Full name (last, first, patronymic)",
        "Коваленко Мар'яна Олегівна",
        "clients",
    ),
    _v(
        "or_number",
        "text",
        "Номер особового рахунку (ОР)",
        "Personal account number (OR)",
        "0412345678",
        "accounts.or_number",
    ),
    _v(
        "eic_code",
        "text",
        "ЕІС-код точки постачання",
        "EIC code of the supply point",
        "56XS1234567890AB",
        "accounts.eic_code",
    ),
    _v(
        "address",
        "text",
        "Адреса об'єкта газопостачання",
        "Gas supply address",
        "м. Київ, вул. Хрещатик, буд. 22, кв. 5",
        "accounts",
    ),
    _v("city", "text", "Населений пункт", "City or village", "Київ", "accounts.city"),
    _v(
        "region",
        "text",
        "Область (мовою шаблону)",
        "Region (in the template's language)",
        "Київська область",
        "regions.name_uk / regions.name_en",
    ),
    _v(
        "balance",
        "money",
        "Сальдо рахунку (плюс — переплата)",
        "Account balance (positive: prepaid)",
        Decimal("-1234.50"),
        "billing_snapshots.balance",
    ),
    _v(
        "debt",
        "money",
        "Сума заборгованості",
        "Overdue debt",
        Decimal("1234.50"),
        "billing_snapshots.debt",
    ),
    _v(
        "due_date",
        "date",
        "Сплатити до",
        "Payment due date",
        datetime.date(2026, 12, 25),
        "billing_snapshots.due_date",
        True,
    ),
    _v(
        "last_charge_amount",
        "money",
        "Останнє нарахування",
        "Last charge",
        Decimal("987.30"),
        "billing_snapshots.last_charge_amount",
        True,
    ),
    _v(
        "last_payment_amount",
        "money",
        "Сума останньої оплати",
        "Last payment amount",
        Decimal("500.00"),
        "billing_snapshots.last_payment_amount",
        True,
    ),
    _v(
        "last_payment_date",
        "date",
        "Дата останньої оплати",
        "Last payment date",
        datetime.date(2026, 11, 20),
        "billing_snapshots.last_payment_at",
        True,
    ),
    _v(
        "tariff",
        "text",
        "Тариф (мовою шаблону)",
        "Tariff (in the template's language)",
        "Річний тариф «Фіксований»",
        "tariffs.name_uk / tariffs.name_en",
    ),
    _v(
        "tariff_price",
        "money",
        "Ціна за м³",
        "Price per m³",
        Decimal("7.96"),
        "tariffs.price_per_m3",
    ),
    _v(
        "meter_number",
        "text",
        "Номер лічильника",
        "Meter serial number",
        "04123456",
        "meters.serial_number",
    ),
    _v(
        "service_centre",
        "text",
        "Адреса та графік ЦОС",
        "Service centre address and hours",
        "м. Київ, вул. Січових Стрільців, 1; пн–пт 8:00–17:00",
        "settings",
    ),
    _v(
        "contact_phone",
        "text",
        "Телефон контакт-центру",
        "Contact centre phone",
        "0 800 300 000",
        "settings",
    ),
    _v(
        "cabinet_url",
        "url",
        "Посилання на особистий кабінет",
        "Personal cabinet link",
        "https://my.example.ua",
        "settings",
    ),
    _v(
        "app_url",
        "url",
        "Посилання на мобільний застосунок",
        "Mobile app link",
        "https://app.example.ua",
        "settings",
    ),
    _v(
        "payment_url",
        "url",
        "Посилання на оплату",
        "Payment link",
        "https://pay.example.ua/0412345678",
        "settings",
    ),
    # Case messages only (replies and client updates of issue 5): the sender supplies them
    # per message (realtime_messages.variables); other sends have no value for them.
    _v("case_number", "text", "Номер звернення", "Case number", "ЗВ-2026-0000123", "cases.number"),
    _v(
        "case_status",
        "text",
        "Статус звернення",
        "Case status (Ukrainian)",
        "Вирішено",
        "case_statuses.name_uk",
    ),
    _v(
        "case_status_en",
        "text",
        "Статус звернення англійською",
        "Case status (English)",
        "Resolved",
        "case_statuses.name_en",
    ),
    _v(
        "case_category",
        "text",
        "Категорія звернення",
        "Case category",
        "Заборгованість",
        "case_categories.name_uk",
    ),
    _v(
        "case_deadline",
        "text",
        "Строк розгляду звернення",
        "Case deadline",
        "05.12.2026 17:00",
        "case_events (deadline)",
        True,
    ),
    _v(
        "case_text",
        "text",
        "Текст відповіді або запитання",
        "Answer or question text",
        "Показники прийнято, перерахунок буде у наступному рахунку.",
        "case_events.body",
    ),
    # Signed per recipient and topic by the sender (rules.consent.UnsubscribeLinks); an
    # e-mail with it also gets List-Unsubscribe headers. E-mail bodies only.
    _v(
        "unsubscribe_url",
        "url",
        "Посилання для відписки від листів цієї теми (лише e-mail)",
        "Link that unsubscribes from this topic's e-mails (e-mail only)",
        "https://herald.example.ua/u/1.marketing.c2lnbmF0dXJlLWV4YW1wbGU",
        "signed per recipient",
    ),
)


# What a case reply or client update supplies with the message itself (not the recipient).
CASE_VARIABLES = frozenset(
    {"case_number", "case_status", "case_status_en", "case_category", "case_deadline", "case_text"}
)

# The data of the event that triggered a message, as ``event.<key>`` (top-level keys of
# the producer's ``data``). Only triggered messages have it: a campaign refuses a
# template that reads it, and a key the event lacks fails that message's render.
EVENT = "event"
_EVENT_EXAMPLE = Decimal("150.00")  # prints as text, formats as money or a number


class _ExampleEvent(dict[str, object]):
    """Any key an event may have, for the validation render on save."""

    def __missing__(self, key: str) -> object:
        return _EVENT_EXAMPLE


class VariableCatalogue:
    """The variables templates may use, looked up by name; built once, passed to the engine.

    Besides these, a body may read ``event.<key>`` (see ``EVENT``)."""

    def __init__(self, variables: Iterable[Variable] = DEFAULT_VARIABLES) -> None:
        self._by_name = {v.name: v for v in variables}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Variable | None:
        """Look a variable up by name (``None`` if the catalogue has no such variable)."""
        return self._by_name.get(name)

    def examples(self) -> dict[str, object]:
        """Give the example values, as one recipient's variables for a validation render."""
        return {**{v.name: v.example for v in self._by_name.values()}, EVENT: _ExampleEvent()}

    def sparse_examples(self) -> dict[str, object]:
        """Give the example values with every nullable variable empty, the worst ordinary case."""
        return {
            **{
                v.name: (("" if v.type == "text" else None) if v.nullable else v.example)
                for v in self._by_name.values()
            },
            EVENT: _ExampleEvent(),
        }


# --- filters ------------------------------------------------------------------------

_CENT = Decimal("0.01")


def format_money(value: object, language: Language = "uk") -> str:
    """Print an amount of hryvnias: 1234.5 -> "1 234,50 грн" (uk) or "UAH 1,234.50" (en)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"money needs a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("money needs a finite number")
        value = Decimal(repr(value))
    amount = Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    grouped = f"{abs(amount):,.2f}"
    if language == "uk":
        return f"{sign}{grouped.replace(',', NBSP).replace('.', ',')}{NBSP}грн"
    return f"{sign}UAH{NBSP}{grouped}"


def format_date(value: object) -> str:
    """Print a date as Ukrainians write it: 2026-12-25 -> "25.12.2026"."""
    if value is None:
        return ""
    if not isinstance(value, datetime.date):
        raise TypeError(f"date needs a date, got {type(value).__name__}")
    return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"


# Filters a template may use. Anything that can blow output up (format, center, indent,
# replace, wordwrap) or switch escaping off (safe) is left out on purpose.
ALLOWED_FILTERS = frozenset(
    {
        "money",
        "date",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "default",
        "d",
        "truncate",
        "round",
        "abs",
        "int",
        "urlencode",
        "e",
        "escape",
    }
)

# Statements and expressions a template may contain. Everything else (include, import,
# extends, block, macro, call, for, with, filter blocks, autoescape switches, attribute
# access, function calls) is refused at save time with its line number.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Assign,
    nodes.Name,
    nodes.Const,
    nodes.Tuple,
    nodes.List,
    nodes.Filter,
    nodes.Test,
    nodes.CondExpr,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Concat,
    nodes.Compare,
    nodes.Operand,
    nodes.Getitem,
    nodes.Slice,
    nodes.Keyword,
    nodes.Scope,  # only a wrapper; what it wraps is checked on its own
)
_STATEMENT_NAMES: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
    nodes.Block: "block",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.For: "for",
    nodes.With: "with",
    nodes.FilterBlock: "filter",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}


class Finding(msgspec.Struct, frozen=True):
    """One problem the static check found in a template: what, and on which line.

    ``escape``: the construct reaches for Python internals, files or jinja's own objects (an
    attempt to get out of the sandbox, journalled), not a mere slip.
    """

    detail: str
    line: int | None = None
    escape: bool = False


_FILE_STATEMENTS = frozenset({nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends})
# Names that only an escape attempt reads: jinja's own objects and the usual SSTI entry points.
ESCAPE_NAMES = frozenset(
    {
        "self",
        "cycler",
        "joiner",
        "lipsum",
        "namespace",
        "range",
        "dict",
        "loop",
        "caller",
        "varargs",
        "kwargs",
        "config",
        "request",
        "session",
        "g",
        "url_for",
        "get_flashed_messages",
        "os",
        "sys",
        "builtins",
    }
)


def static_findings(tree: nodes.Template) -> list[Finding]:
    """List the constructs in a parsed template that Herald's templates do not allow."""
    found: list[Finding] = []
    for node in _walk(tree, prune=tuple(_STATEMENT_NAMES)):
        line = getattr(node, "lineno", None)
        if isinstance(node, nodes.Getattr) and _event_key(node):
            if node.attr in _DICT_NAMES:  # jinja would find the dict's method, not the key
                found.append(
                    Finding(
                        f"event.{node.attr} cannot be read: the name is taken "
                        "by the event's mapping",
                        line,
                    )
                )
        elif isinstance(node, nodes.Getattr):
            internal = node.attr.startswith("_")
            what = "internals" if internal else "attributes"
            found.append(
                Finding(f"access to {what} ('.{node.attr}') is not allowed", line, internal)
            )
        elif isinstance(node, nodes.Call):
            found.append(Finding("calling functions or methods is not allowed; use a filter", line))
        elif isinstance(node, nodes.Pow):
            found.append(Finding("the ** operator is not allowed", line))
        elif isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            found.append(
                Finding(
                    f"unknown filter '{node.name}'; allowed: " + ", ".join(sorted(ALLOWED_FILTERS)),
                    line,
                )
            )
        elif isinstance(node, nodes.Getitem) and not _plain_index(node.arg):
            found.append(Finding("only a number or a slice may be used as an index", line))
        elif type(node) in _STATEMENT_NAMES:
            found.append(
                Finding(
                    f"{{% {_STATEMENT_NAMES[type(node)]} %}} is not allowed",
                    line,
                    type(node) in _FILE_STATEMENTS,
                )
            )
        elif not isinstance(node, _ALLOWED_NODES):
            found.append(Finding(f"{type(node).__name__} is not allowed", line))
        if (
            isinstance(node, nodes.Const)
            and isinstance(node.value, str)
            and node.value.startswith("__")
        ):
            # attr('__class__'), ['__globals__'], map(attribute='__init__')...
            found.append(
                Finding(f"access to internals ({node.value[:40]!r}) is not allowed", line, True)
            )
    return found


_DICT_NAMES = frozenset(dir(dict))


def _event_key(node: nodes.Getattr) -> bool:
    """Tell whether the node reads a top-level key of the triggering event: event.<key>."""
    return (
        isinstance(node.node, nodes.Name)
        and node.node.name == EVENT
        and not node.attr.startswith("_")
    )


def _walk(node: nodes.Node, prune: tuple[type[nodes.Node], ...] = ()) -> Iterator[nodes.Node]:
    """Yield a node and its descendants, not looking inside nodes of the ``prune`` types."""
    yield node
    if not isinstance(node, prune):
        for child in node.iter_child_nodes():
            yield from _walk(child, prune)


def _plain_index(arg: nodes.Node) -> bool:
    if isinstance(arg, nodes.Const):
        return isinstance(arg.value, int) and not isinstance(arg.value, bool)
    if isinstance(arg, nodes.Neg):
        return _plain_index(arg.node)
    return isinstance(arg, nodes.Slice)


def _first_lines(tree: nodes.Template) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in _walk(tree):
        if isinstance(node, nodes.Name) and node.ctx == "load":
            lines.setdefault(node.name, node.lineno)
    return lines


def check_source(
    env: ImmutableSandboxedEnvironment,
    source: str,
    catalogue: VariableCatalogue,
) -> tuple[nodes.Template | None, list[Finding], set[str]]:
    """Parse one template body and find what is wrong: syntax, forbidden constructs, unknown names.

    Returns the parsed tree (``None`` when anything was found), the findings with line
    numbers, and the catalogue variables the body reads.
    """
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return None, [Finding(f"syntax error: {exc.message}", exc.lineno)], set()
    found = static_findings(tree)
    lines = _first_lines(tree)
    assigned = {n.name for n in _walk(tree) if isinstance(n, nodes.Name) and n.ctx == "store"}
    try:
        # meta knows jinja's scoping; the plain name list also catches names jinja resolves
        # itself (self, loop, caller...), which no template here needs.
        undeclared = meta.find_undeclared_variables(tree) | (lines.keys() - assigned)
    except TemplateSyntaxError as exc:  # an unknown test, or a filter already found above
        return None, found or [Finding(exc.message or str(exc), exc.lineno)], set()
    used = {name for name in undeclared if name in catalogue or name == EVENT}
    for name in sorted(undeclared - used):
        hint = " (it is set only inside a condition)" if name in assigned else ""
        escape = name in ESCAPE_NAMES or name.startswith("_")
        found.append(Finding(f"unknown variable '{name}'{hint}", lines.get(name), escape))
    return (None if found else tree), found, used


def constant_text(tree: nodes.Template) -> str | None:
    """Give the text of a body without any tags (the same for every recipient), else ``None``."""
    outputs = [node for node in tree.body if isinstance(node, nodes.Output)]
    data = [n for out in outputs for n in out.nodes]
    texts = [n for n in data if isinstance(n, nodes.TemplateData)]
    if len(outputs) == len(tree.body) and len(texts) == len(data):
        return "".join(n.data for n in texts)
    return None


_LITERAL_ORIGIN = re.compile(r"https://[^/?#{}\s]+(?:[/?#]|$)", re.IGNORECASE)
_URL_VARIABLE = re.compile(r"\{\{-?\s*([A-Za-z_]\w*)\s*-?\}\}(?:[/?#]|$)")


def link_source_ok(source: str, catalogue: VariableCatalogue) -> bool:
    """Tell whether a link body starts with a literal https://host or with a link variable.

    The scheme and host are then fixed by the template or by configuration, never by
    client data: "{{ address }}", "https://{{ or_number }}", "{{ cabinet_url }}@evil.example"
    and "http://..." are all refused.
    """
    source = source.strip()
    if _LITERAL_ORIGIN.match(source):
        return True
    found = _URL_VARIABLE.match(source)
    variable = catalogue.get(found.group(1)) if found else None
    return variable is not None and variable.type == "url"


def is_https(url: str) -> bool:
    """Tell whether a rendered link is an absolute https:// URL with a host and no spaces."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and not any(c.isspace() for c in url)


# --- the sandbox --------------------------------------------------------------------

_NUMBERS = (int, float, Decimal)


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with ``*``, ``%`` and ``**`` limited to numbers.

    The static check already refuses what a template cannot contain; this is the second
    wall for anything that slipped through: ``'x' * 10**9`` or ``'%999999999s' % x``
    would otherwise allocate gigabytes at render time.
    """

    intercepted_binops = frozenset({"*", "%", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            raise SecurityError("the ** operator is not allowed")
        if not (isinstance(left, _NUMBERS) and isinstance(right, _NUMBERS)):
            raise SecurityError(f"the {operator_} operator works on numbers only")
        return operator.mul(left, right) if operator_ == "*" else operator.mod(left, right)


def _none_as_empty(value: object) -> object:
    return "" if value is None else value


_TEXT_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "truncate", "urlencode")


def _none_safe(text_filter: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a text filter so that a missing value (None) gives "" instead of "NONE" or "None"."""
    pass_arg = getattr(text_filter, "jinja_pass_arg", None)
    if pass_arg is None:

        def safe(value: object, *args: Any, **kwargs: Any) -> Any:
            return "" if value is None else text_filter(value, *args, **kwargs)

        return safe

    def safe_with(first: object, value: object, *args: Any, **kwargs: Any) -> Any:
        return "" if value is None else text_filter(first, value, *args, **kwargs)

    safe_with.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]  # keep what jinja passes first
    return safe_with


def build_environment(language: Language, *, html: bool) -> TemplateSandbox:
    """Make the sandboxed environment for one language; ``html`` turns autoescaping on."""
    env = TemplateSandbox(
        undefined=StrictUndefined,
        autoescape=html,
        finalize=_none_as_empty,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=0,
    )
    env.globals.clear()  # no range, cycler, joiner, lipsum, namespace, dict

    def money(value: object) -> str:
        return format_money(value, language)

    filters: Mapping[str, Callable[..., Any]] = {**env.filters, "money": money, "date": format_date}
    env.filters = {
        name: _none_safe(f) if name in _TEXT_FILTERS else f
        for name, f in filters.items()
        if name in ALLOWED_FILTERS
    }
    return env


# --- HTML bodies: the derived plain-text part and the links to check -----------------

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "tr",
        "table",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "hr",
    }
)
_SKIP_TAGS = frozenset({"style", "script", "head", "title"})


class _HtmlReader(HTMLParser):
    """Turns template HTML into template text and lists its links (jinja tags kept verbatim)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[tuple[str, str]] = []
        self._skip = 0
        self._anchors: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "background", "action") and value is not None:
                self.links.append((name, value.strip()))
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n- " if tag == "li" else "\n\n")
        elif tag in ("td", "th"):
            self.out.append(" ")
        if tag == "a":
            self._anchors.append((dict(attrs).get("href"), len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS and tag != "li":
            self.out.append("\n")
        elif tag == "a" and self._anchors:
            href, start = self._anchors.pop()
            shown = "".join(self.out[start:]).strip()
            if href and href.strip() != shown and not href.startswith(("mailto:", "tel:", "#")):
                self.out.append(f" ({href.strip()})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(_HTML_SPACE.sub(" ", data))


def read_html(source: str) -> tuple[str, list[tuple[str, str]]]:
    """Derive a plain-text template from an HTML template, and list its href/src values."""
    tags: dict[str, int] = {}  # the same tag gets the same placeholder: href == link text

    def hide(match: re.Match[str]) -> str:
        return f"\ue000{tags.setdefault(match.group(), len(tags))}\ue001"

    reader = _HtmlReader()
    reader.feed(_JINJA_TAG.sub(hide, source))
    reader.close()

    by_index = list(tags)

    def show(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: by_index[int(m.group(1))], text)

    # HTML white space collapses; a no-break space (&nbsp;) is kept, as the author meant it.
    lines = [_HTML_SPACE.sub(" ", line).strip(" ") for line in "".join(reader.out).split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return show(text), [(name, show(value)) for name, value in reader.links]
