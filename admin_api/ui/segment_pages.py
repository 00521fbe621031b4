"""The segment builder: a condition tree (all / any / not, any depth) over the attribute
catalogue with an editor per type, a live count (sampled above a million clients, marked
approximate), static and dynamic segments, set operations, a Client_ID list imported from
CSV, and the export.

The tree is edited in the browser (``segmentBuilder`` in herald.js) and posted as the
API's JSON condition, so the page and the API validate it the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from admin_api import inputs
from admin_api.routing import EndpointTable, decode_query, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms, i18n
from admin_api.ui.menu import N_
from admin_api.ui.rendering import language, render
from admin_api.views.segments import read_text
from crm.segments import catalogue, store
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

OPERATORS = {
    "equals": N_("equals"),
    "not_equals": N_("does not equal"),
    "in": N_("is one of"),
    "not_in": N_("is none of"),
    "contains": N_("contains"),
    "between": N_("between"),
    "lt": N_("less than"),
    "lte": N_("at most"),
    "gt": N_("more than"),
    "gte": N_("at least"),
    "older_than_days": N_("more than N days ago"),
    "within_last_days": N_("within the last N days"),
    "is_empty": N_("is empty"),
    "is_not_empty": N_("is not empty"),
}
# Words of the builder's buttons, handed to herald.js translated.
WORDS = {
    "all": N_("all of these (AND)"),
    "any": N_("any of these (OR)"),
    "not": N_("NOT"),
    "add_condition": N_("+ condition"),
    "add_group": N_("+ group"),
    "remove": N_("Remove"),
    "days": N_("days"),
    "from": N_("from"),
    "to": N_("to"),
    "yes": N_("yes"),
    "no": N_("no"),
    "comma": N_("separate values with commas"),
    "channel": N_("Channel"),
    "topic": N_("Topic"),
}
SOURCES = {
    "client": N_("Client"),
    "account": N_("Account"),
    "billing": N_("Billing"),
    "consent": N_("Consent"),
    "channel_usage": N_("Digital channels"),
    "external": N_("Other systems"),
}
OPS = {
    "union": N_("union"),
    "intersection": N_("intersection"),
    "exclusion": N_("exclusion"),
}


async def builder_data(request: web.Request) -> dict[str, Any]:
    """The catalogue and the builder's words in the person's language, for herald.js."""
    lang = await language(request)
    renderer_gettext = i18n.translations(lang).gettext
    async with request.app[DB].acquire() as conn:
        found = await catalogue.load(conn)
        names = await catalogue.value_names(conn)
    attributes = [
        {
            "code": a.code,
            "label": a.label_en if lang == "en" else a.label_uk,
            "group": renderer_gettext(SOURCES.get(a.source, a.source)),
            "type": a.type,
            "operators": [o for o in OPERATORS if o in a.operators],
            "values": a.values,
            "qualifiers": [{"name": q.name, "values": q.values} for q in a.qualifiers],
        }
        for a in found.attributes.values()
    ]
    return {
        "attributes": attributes,
        "operators": {k: renderer_gettext(v) for k, v in OPERATORS.items()},
        "words": {k: renderer_gettext(v) for k, v in WORDS.items()},
        "value_names": {code: en if lang == "en" else uk for code, (uk, en) in names.items()},
    }


class SegmentListQuery(msgspec.Struct):
    after_id: Id | None = None


LIST_PAGE = 100


@endpoints.get("/ui/segments", permission="segments.read", response=str, media_type="text/html")
async def segments_page(request: web.Request) -> web.Response:
    """The segments: kind, members, when materialised; new, import."""
    query = forms.query(request, SegmentListQuery)
    async with request.app[DB].acquire() as conn:
        items = await store.list_segments(
            conn, after_id=query.after_id or 0, limit=LIST_PAGE + 1, kind=None
        )
    more = len(items) > LIST_PAGE
    items = items[:LIST_PAGE]
    return await render(
        request,
        "segments.html",
        {"items": items, "next_after": items[-1].id if more else None, "errors": {}},
    )


async def _builder_page(
    request: web.Request,
    segment: store.Segment | None,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
    imported: ImportNote | None = None,
) -> web.Response:
    others: list[store.Segment] = []
    if segment is not None:
        async with request.app[DB].acquire() as conn:
            others = [
                s
                for s in await store.list_segments(conn, after_id=0, limit=200, kind=None)
                if s.id != segment.id
            ]
    data = await builder_data(request)
    return await render(
        request,
        "segment_edit.html",
        {
            "segment": segment,
            "values": values,
            "errors": errors or {},
            "builder": msgspec.json.encode(data).decode(),
            "others": others,
            "set_ops": OPS,
            "imported": imported,
        },
        status=status,
    )


@endpoints.get(
    "/ui/segments/new", permission="segments.manage", response=str, media_type="text/html"
)
async def new_segment(request: web.Request) -> web.Response:
    """An empty builder."""
    return await _builder_page(
        request, None, values={"kind": "dynamic", "condition": '{"all": []}'}
    )


@endpoints.get(
    r"/ui/segments/{segment_id:\d+}",
    permission="segments.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def segment_page(request: web.Request) -> web.Response:
    """A segment in the builder, with its members, refresh, export and set operations."""
    note = forms.query(request, ImportNote)
    async with request.app[DB].acquire() as conn:
        segment = await store.get(conn, path_int(request, "segment_id"))
    values = {
        "name": segment.name,
        "description": segment.description,
        "kind": segment.kind,
        "condition": msgspec.json.encode(segment.condition).decode()
        if segment.condition is not None
        else "",
    }
    return await _builder_page(
        request, segment, values=values, imported=note if note.imported is not None else None
    )


class ImportNote(msgspec.Struct):
    """What an import reported, shown once on the new segment's page."""

    imported: Annotated[int, msgspec.Meta(ge=0, le=10**9)] | None = None
    unknown: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    refused: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0


class PreviewForm(msgspec.Struct):
    condition: str = ""
    exact: bool = False


def _condition(text: str) -> Any:
    try:
        found = msgspec.json.decode(text.encode()) if text.strip() else None
    except msgspec.DecodeError:
        raise InvalidInput("condition", "the condition is not valid JSON") from None
    if not isinstance(found, dict):
        raise InvalidInput("condition", "add at least one condition")
    return found


@endpoints.post(
    "/ui/segments/preview",
    permission="segments.read",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def preview_part(request: web.Request) -> web.Response:
    """How many clients the condition being edited selects (approximate above a million)."""
    form = await forms.form(request, PreviewForm)
    try:
        condition = _condition(form.condition)
        if condition in ({"all": []}, {"any": []}):
            return await render(request, "_segment_count.html", {"empty": True})
        async with request.app[DB].acquire() as conn:
            preview = await store.preview(conn, condition, exact=form.exact)
    except InvalidInput as error:
        return await render(request, "_segment_count.html", {"error": error, "preview": None})
    return await render(request, "_segment_count.html", {"preview": preview, "error": None})


class SegmentForm(msgspec.Struct):
    name: str = ""
    description: str = ""
    kind: Literal["static", "dynamic"] = "dynamic"
    condition: str = ""


async def _save(request: web.Request, segment_id: int | None) -> web.Response:
    posted = await inputs.read_form(request)
    values = {k: v for k, v in posted.items() if isinstance(v, str) and k != "csrf_token"}
    segment = None
    async with request.app[DB].acquire() as conn:
        if segment_id is not None:
            segment = await store.get(conn, segment_id)
        try:
            form = decode_query({k: v for k, v in values.items() if v.strip()}, SegmentForm)
            if segment is not None and segment.origin is not None:
                saved = await store.update(
                    conn,
                    actor(request),
                    segment_id or 0,
                    name=form.name,
                    description=form.description,
                    kind=None,
                    condition=None,
                    pool=request.app[DB],
                )
            elif segment is not None:
                saved = await store.update(
                    conn,
                    actor(request),
                    segment.id,
                    name=form.name,
                    description=form.description,
                    kind=form.kind,
                    condition=_condition(form.condition),
                    pool=request.app[DB],
                )
            else:
                saved = await store.create(
                    conn,
                    actor(request),
                    name=form.name,
                    kind=form.kind,
                    condition=_condition(form.condition),
                    description=form.description,
                    pool=request.app[DB],
                )
        except InvalidInput as error:
            field = error.field.split(".")[0].split("[")[0]
            return await _builder_page(
                request,
                segment,
                values=values,
                errors={field: error.detail, "_path": error.field},
                status=400,
            )
    raise web.HTTPSeeOther(f"/ui/segments/{saved.id}")


@endpoints.post(
    "/ui/segments",
    permission="segments.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def create_segment(request: web.Request) -> web.Response:
    """Create the segment and materialise its members (errors beside their field)."""
    return await _save(request, None)


@endpoints.post(
    r"/ui/segments/{segment_id:\d+}",
    permission="segments.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def save_segment(request: web.Request) -> web.Response:
    """Save the name, kind and condition; a new condition materialises the members again."""
    return await _save(request, path_int(request, "segment_id"))


@endpoints.post(
    r"/ui/segments/{segment_id:\d+}/refresh",
    permission="segments.manage",
    response=str,
    media_type="text/html",
    errors=(404, 409),
)
async def refresh_segment(request: web.Request) -> web.Response:
    """Materialise the members again now."""
    segment_id = path_int(request, "segment_id")
    async with request.app[DB].acquire() as conn:
        await store.refresh(conn, actor(request), segment_id, pool=request.app[DB])
    raise web.HTTPSeeOther(f"/ui/segments/{segment_id}")


class CombineForm(msgspec.Struct):
    op: Literal["union", "intersection", "exclusion"]
    other: Id
    name: str | None = None


@endpoints.post(
    r"/ui/segments/{segment_id:\d+}/combine",
    permission="segments.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def combine_segments(request: web.Request) -> web.Response:
    """A new static segment: this one's union, intersection or exclusion with another."""
    form = await forms.form(request, CombineForm)
    async with request.app[DB].acquire() as conn:
        made = await store.combine(
            conn,
            actor(request),
            path_int(request, "segment_id"),
            form.op,
            form.other,
            name=form.name,
            pool=request.app[DB],
        )
    raise web.HTTPSeeOther(f"/ui/segments/{made.id}")


@endpoints.post(
    "/ui/segments/import",
    permission="segments.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def import_segment(request: web.Request) -> web.Response:
    """A static segment from an uploaded CSV of Client_IDs; the report on its page."""
    posted = await inputs.read_form(request)
    name = posted.get("name")
    upload = posted.get("file")
    errors: dict[str, str] = {}
    try:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("name", "a name of 1 to 200 characters is required")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file", "choose a CSV file with one Client_ID a row")
        parsed = store.parse_client_ids(await read_text(request, upload.file.read()))
        async with request.app[DB].acquire() as conn:
            segment, unknown = await store.import_ids(
                conn, actor(request), name=name.strip(), client_ids=parsed.client_ids
            )
    except InvalidInput as error:
        errors = {"import_" + error.field: error.detail}
        async with request.app[DB].acquire() as conn:
            items = await store.list_segments(conn, after_id=0, limit=LIST_PAGE, kind=None)
        return await render(
            request,
            "segments.html",
            {"items": items, "next_after": None, "errors": errors},
            status=400,
        )
    raise web.HTTPSeeOther(
        f"/ui/segments/{segment.id}?imported={parsed.rows}&unknown={unknown}"
        f"&refused={len(parsed.refused)}"
    )
