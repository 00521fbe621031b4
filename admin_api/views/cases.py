"""Cases (issue 5, points 1-4): intake from every channel, the operator queue, a case's
card and history, status changes, classification, merges, and their configuration."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from admin_api import exporting, paging
from admin_api.problems import problem_response
from admin_api.routing import PUBLIC, EndpointTable, decode_json, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.views import exports
from crm.cases import (
    automation,
    categories,
    classify,
    correction,
    duplicates,
    intake,
    queue,
    rule_engine,
    sla,
    store,
    transitions,
    webhooks,
)
from crm.cases.automation import CaseAutomationSpec
from crm.cases.categories import CaseCategoryPatch, CaseCategorySpec
from crm.cases.channels import (
    AppRequest,
    FormSubmission,
    InboundEmail,
    TelegramUpdate,
    ViberCallback,
    WalkInRegistration,
)
from crm.cases.classify import CaseRuleSpec
from crm.cases.correction import ClassificationPatch
from crm.cases.duplicates import CaseSettingsSpec
from crm.cases.queue import CaseQueuePage, CaseQueueQuery
from crm.cases.transitions import CaseTransitionTable
from crm.cases.types import (
    Case,
    CaseAutomationRule,
    CaseCategory,
    CaseClassificationRule,
    CaseDetail,
    CaseEvent,
    CaseSettings,
    CaseTransition,
    IntakeResult,
    Status,
)
from crm.cases.webhooks import CaseWebhookSecret, CaseWebhookState
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("cases")


class WebhookReply(msgspec.Struct):
    """What a chat webhook did: ``case`` is null for events that are not messages."""

    ignored: bool
    case: IntakeResult | None = None


class CaseStatusChange(msgspec.Struct, forbid_unknown_fields=True):
    status: Status
    comment: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class CaseClientLink(msgspec.Struct, forbid_unknown_fields=True):
    client_id: Id
    account_id: Id | None = None


class CaseMergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    into: Id


class CaseEventsQuery(msgspec.Struct, forbid_unknown_fields=True):
    after_id: Annotated[Id | None, paging.DEPRECATED_PARAM] = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: paging.Cursor | None = None


class CaseEventsPage(msgspec.Struct):
    items: list[CaseEvent]
    next_after_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class CaseCategoriesQuery(msgspec.Struct, forbid_unknown_fields=True):
    include_inactive: bool = False


class CaseTransitionsSpec(msgspec.Struct, forbid_unknown_fields=True):
    transitions: Annotated[list[CaseTransition], msgspec.Meta(max_length=30)]


def _unauthenticated(request: web.Request, channel: str, header: str) -> web.Response:
    return problem_response(
        request,
        401,
        code="webhook-unauthenticated",
        detail=f"the {channel} webhook needs a valid {header} header "
        "(and its secret configured in Herald)",
    )


async def _with_sla(conn: asyncpg.Connection, detail: CaseDetail) -> CaseDetail:
    detail.sla = (await sla.sla_for(conn, [detail.case.id])).get(detail.case.id)
    return detail


# -- intake ---------------------------------------------------------------------------------


@endpoints.post(
    "/api/v1/case-intake/viber", permission=PUBLIC, response=WebhookReply, errors=(400, 401)
)
async def viber_webhook(request: web.Request) -> WebhookReply | web.Response:
    """Viber bot callbacks; authenticated by X-Viber-Content-Signature (HMAC of the body)."""
    raw = await request.read()
    async with request.app[DB].acquire() as conn:
        if not await webhooks.viber_signed(
            conn, raw, request.headers.get(webhooks.VIBER_SIGNATURE)
        ):
            return _unauthenticated(request, "Viber", webhooks.VIBER_SIGNATURE)
        result = await intake.from_viber(conn, decode_json(raw, ViberCallback))
    return WebhookReply(result is None, result)


@endpoints.post(
    "/api/v1/case-intake/telegram", permission=PUBLIC, response=WebhookReply, errors=(400, 401)
)
async def telegram_webhook(request: web.Request) -> WebhookReply | web.Response:
    """Telegram bot updates; authenticated by X-Telegram-Bot-Api-Secret-Token."""
    raw = await request.read()
    async with request.app[DB].acquire() as conn:
        if not await webhooks.telegram_authentic(
            conn, request.headers.get(webhooks.TELEGRAM_SECRET)
        ):
            return _unauthenticated(request, "Telegram", webhooks.TELEGRAM_SECRET)
        result = await intake.from_telegram(conn, decode_json(raw, TelegramUpdate))
    return WebhookReply(result is None, result)


@endpoints.post(
    "/api/v1/case-intake/forms",
    permission="cases.intake",
    body=FormSubmission,
    response=IntakeResult,
    errors=(400,),
)
async def form_intake(request: web.Request, body: FormSubmission) -> IntakeResult:
    """A feedback form of the site or the personal cabinet becomes a case."""
    async with request.app[DB].acquire() as conn:
        return await intake.from_form(conn, actor(request), body)


@endpoints.post(
    "/api/v1/case-intake/email",
    permission="cases.intake",
    body=InboundEmail,
    response=IntakeResult,
    errors=(400,),
)
async def email_intake(request: web.Request, body: InboundEmail) -> IntakeResult:
    """An inbound e-mail: a reply (In-Reply-To/References, or the case number in the
    subject) joins its open case; anything else opens a case."""
    async with request.app[DB].acquire() as conn:
        return await intake.from_email(conn, actor(request), body)


@endpoints.post(
    "/api/v1/case-intake/app",
    permission="cases.intake",
    body=AppRequest,
    response=IntakeResult,
    errors=(400,),
)
async def app_intake(request: web.Request, body: AppRequest) -> IntakeResult:
    """An appeal from the mobile app (or a reply to one of the client's open cases)."""
    async with request.app[DB].acquire() as conn:
        return await intake.from_app(conn, actor(request), body)


@endpoints.post(
    "/api/v1/cases",
    permission="cases.manage",
    body=WalkInRegistration,
    response=CaseDetail,
    status=201,
    errors=(400,),
)
async def register_case(request: web.Request, body: WalkInRegistration) -> CaseDetail:
    """An operator registers a case by hand (a walk-in visit, or a call without CTI)."""
    async with request.app[DB].acquire() as conn:
        result = await intake.from_walk_in(conn, actor(request), body)
        return await _with_sla(conn, await store.detail(conn, result.case_id))


# -- the queue and a case -------------------------------------------------------------------


@endpoints.get(
    "/api/v1/cases",
    permission="cases.read",
    query=CaseQueueQuery,
    response=CaseQueuePage,
    errors=(400,),
)
async def list_cases(request: web.Request, query: CaseQueueQuery) -> Any:
    """The one queue across channels, filtered; keyset pages (pass ``next_cursor``).
    ``format=csv`` or ``xlsx``: all matching cases as a file, or (over the export
    threshold) 202 and the export job to follow (``/api/v1/exports/{id}``)."""
    if query.format != "json":
        return await exports.start_response(
            request, "cases", query.format, exporting.stored_filters(query), None
        )
    async with request.app[DB].acquire() as conn:
        page = await queue.list_queue(conn, query)
        blocks = await sla.sla_for(conn, [item.id for item in page.items])
    for item in page.items:
        item.sla = blocks.get(item.id)
    return page


@endpoints.get(
    "/api/v1/cases/{case_id}", permission="cases.read", response=CaseDetail, errors=(404,)
)
async def get_case(request: web.Request) -> CaseDetail:
    """A case with the client's previous cases, ambiguous-contact candidates, its
    duplicates and the cases merged into it."""
    async with request.app[DB].acquire() as conn:
        return await _with_sla(conn, await store.detail(conn, path_int(request, "case_id")))


@endpoints.get(
    "/api/v1/cases/{case_id}/events",
    permission="cases.read",
    query=CaseEventsQuery,
    response=CaseEventsPage,
    errors=(404,),
)
async def case_events(request: web.Request, query: CaseEventsQuery) -> CaseEventsPage:
    """The case's history, oldest first: messages, transitions, corrections, merges."""
    case_id = path_int(request, "case_id")
    after_id = paging.start(query.cursor, query.after_id)
    async with request.app[DB].acquire() as conn:
        await store.get_case(conn, case_id)
        items = await store.events(conn, case_id, after_id=after_id, limit=query.limit)
    return CaseEventsPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/cases/{case_id}/status",
    permission="cases.manage",
    body=CaseStatusChange,
    response=Case,
    errors=(404, 409),
)
async def change_status(request: web.Request, body: CaseStatusChange) -> Case:
    """Move the case to another status, if the transition table allows it (else 409)."""
    async with request.app[DB].acquire() as conn:
        return await rule_engine.changing_case(
            conn,
            transitions.change_status(
                conn, actor(request), path_int(request, "case_id"), body.status, body.comment
            ),
        )


@endpoints.patch(
    "/api/v1/cases/{case_id}/classification",
    permission="cases.manage",
    body=ClassificationPatch,
    response=Case,
    errors=(404, 409),
)
async def correct_classification(request: web.Request, body: ClassificationPatch) -> Case:
    """Correct category, type or priority; the history keeps proposed vs chosen."""
    async with request.app[DB].acquire() as conn:
        return await rule_engine.changing_case(
            conn, correction.correct(conn, actor(request), path_int(request, "case_id"), body)
        )


@endpoints.post(
    "/api/v1/cases/{case_id}/client",
    permission="cases.manage",
    body=CaseClientLink,
    response=Case,
    errors=(404, 409),
)
async def link_client(request: web.Request, body: CaseClientLink) -> Case:
    """Link an anonymous case to a client, once (a linked case's client never changes)."""
    async with request.app[DB].acquire() as conn:
        return await duplicates.link_client(
            conn, actor(request), path_int(request, "case_id"), body.client_id, body.account_id
        )


@endpoints.post(
    "/api/v1/cases/{case_id}/merge",
    permission="cases.manage",
    body=CaseMergeRequest,
    response=Case,
    errors=(404, 409),
)
async def merge_case(request: web.Request, body: CaseMergeRequest) -> Case:
    """Merge this case into ``into`` (e.g. a duplicate into its original); returns ``into``."""
    async with request.app[DB].acquire() as conn:
        return await duplicates.merge(conn, actor(request), path_int(request, "case_id"), body.into)


# -- configuration --------------------------------------------------------------------------


@endpoints.get(
    "/api/v1/case-categories",
    permission="cases.read",
    query=CaseCategoriesQuery,
    response=list[CaseCategory],
)
async def list_categories(request: web.Request, query: CaseCategoriesQuery) -> list[CaseCategory]:
    """The category tree as a flat list (parent_id links), top level first."""
    async with request.app[DB].acquire() as conn:
        return await categories.list_categories(conn, include_inactive=query.include_inactive)


@endpoints.post(
    "/api/v1/case-categories",
    permission="cases.admin",
    body=CaseCategorySpec,
    response=CaseCategory,
    status=201,
    errors=(400, 409),
)
async def create_category(request: web.Request, body: CaseCategorySpec) -> CaseCategory:
    """Add a category (under ``parent_id``, or at the top level)."""
    async with request.app[DB].acquire() as conn:
        return await categories.create_category(conn, actor(request), body)


@endpoints.patch(
    "/api/v1/case-categories/{category_id}",
    permission="cases.admin",
    body=CaseCategoryPatch,
    response=CaseCategory,
    errors=(404,),
)
async def update_category(request: web.Request, body: CaseCategoryPatch) -> CaseCategory:
    """Rename, move (parent_id; 0 = top level), reorder, deactivate or reactivate."""
    async with request.app[DB].acquire() as conn:
        return await categories.update_category(
            conn, actor(request), path_int(request, "category_id"), body
        )


@endpoints.delete(
    "/api/v1/case-categories/{category_id}", permission="cases.admin", status=204, errors=(404, 409)
)
async def delete_category(request: web.Request) -> None:
    """Delete an unused category; a used one is refused (deactivate it instead)."""
    async with request.app[DB].acquire() as conn:
        await categories.delete_category(conn, actor(request), path_int(request, "category_id"))


@endpoints.get("/api/v1/case-transitions", permission="cases.read", response=CaseTransitionTable)
async def get_transitions(request: web.Request) -> CaseTransitionTable:
    """The statuses and the transitions allowed between them."""
    async with request.app[DB].acquire() as conn:
        return await transitions.table(conn)


@endpoints.put(
    "/api/v1/case-transitions",
    permission="cases.admin",
    body=CaseTransitionsSpec,
    response=CaseTransitionTable,
    errors=(400,),
)
async def put_transitions(request: web.Request, body: CaseTransitionsSpec) -> CaseTransitionTable:
    """Replace the whole set of allowed transitions."""
    async with request.app[DB].acquire() as conn:
        return await transitions.replace_table(conn, actor(request), body.transitions)


@endpoints.get(
    "/api/v1/case-classification-rules",
    permission="cases.admin",
    response=list[CaseClassificationRule],
)
async def list_classification_rules(request: web.Request) -> list[CaseClassificationRule]:
    """Auto-classification rules in the order they are tried (position, then id)."""
    async with request.app[DB].acquire() as conn:
        return await classify.list_rules(conn)


@endpoints.post(
    "/api/v1/case-classification-rules",
    permission="cases.admin",
    body=CaseRuleSpec,
    response=CaseClassificationRule,
    status=201,
    errors=(400,),
)
async def create_classification_rule(
    request: web.Request, body: CaseRuleSpec
) -> CaseClassificationRule:
    """Add a rule: conditions (keywords, channels, consumer types, debt) -> proposal."""
    async with request.app[DB].acquire() as conn:
        return await classify.create_rule(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-classification-rules/{rule_id}",
    permission="cases.admin",
    body=CaseRuleSpec,
    response=CaseClassificationRule,
    errors=(400, 404),
)
async def update_classification_rule(
    request: web.Request, body: CaseRuleSpec
) -> CaseClassificationRule:
    """Replace a rule."""
    async with request.app[DB].acquire() as conn:
        return await classify.update_rule(conn, actor(request), path_int(request, "rule_id"), body)


@endpoints.delete(
    "/api/v1/case-classification-rules/{rule_id}",
    permission="cases.admin",
    status=204,
    errors=(404,),
)
async def delete_classification_rule(request: web.Request) -> None:
    """Delete a rule (cases keep what it proposed)."""
    async with request.app[DB].acquire() as conn:
        await classify.delete_rule(conn, actor(request), path_int(request, "rule_id"))


@endpoints.get(
    "/api/v1/case-automation-rules", permission="cases.admin", response=list[CaseAutomationRule]
)
async def list_automation_rules(request: web.Request) -> list[CaseAutomationRule]:
    """No-code automations: on the client's reply, and after idle hours."""
    async with request.app[DB].acquire() as conn:
        return await automation.list_rules(conn)


@endpoints.post(
    "/api/v1/case-automation-rules",
    permission="cases.admin",
    body=CaseAutomationSpec,
    response=CaseAutomationRule,
    status=201,
    errors=(400,),
)
async def create_automation_rule(
    request: web.Request, body: CaseAutomationSpec
) -> CaseAutomationRule:
    """Add an automation; its transition must be allowed by the transition table."""
    async with request.app[DB].acquire() as conn:
        return await automation.create_rule(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-automation-rules/{rule_id}",
    permission="cases.admin",
    body=CaseAutomationSpec,
    response=CaseAutomationRule,
    errors=(400, 404),
)
async def update_automation_rule(
    request: web.Request, body: CaseAutomationSpec
) -> CaseAutomationRule:
    """Replace an automation."""
    async with request.app[DB].acquire() as conn:
        return await automation.update_rule(
            conn, actor(request), path_int(request, "rule_id"), body
        )


@endpoints.delete(
    "/api/v1/case-automation-rules/{rule_id}", permission="cases.admin", status=204, errors=(404,)
)
async def delete_automation_rule(request: web.Request) -> None:
    """Delete an automation."""
    async with request.app[DB].acquire() as conn:
        await automation.delete_rule(conn, actor(request), path_int(request, "rule_id"))


@endpoints.get("/api/v1/case-settings", permission="cases.read", response=CaseSettings)
async def get_settings(request: web.Request) -> CaseSettings:
    """The repeat window (days) and the duplicate window (minutes)."""
    async with request.app[DB].acquire() as conn:
        return await duplicates.get_settings(conn)


@endpoints.put(
    "/api/v1/case-settings",
    permission="cases.admin",
    body=CaseSettingsSpec,
    response=CaseSettings,
    errors=(400,),
)
async def put_settings(request: web.Request, body: CaseSettingsSpec) -> CaseSettings:
    """Set the repeat and duplicate windows."""
    async with request.app[DB].acquire() as conn:
        return await duplicates.put_settings(conn, actor(request), body)


@endpoints.get("/api/v1/case-webhooks", permission="cases.admin", response=list[CaseWebhookState])
async def list_webhooks(request: web.Request) -> list[CaseWebhookState]:
    """Whether each chat webhook has its secret configured (the secrets are never shown)."""
    async with request.app[DB].acquire() as conn:
        return await webhooks.states(conn)


@endpoints.put(
    "/api/v1/case-webhooks/{channel}",
    permission="cases.admin",
    body=CaseWebhookSecret,
    status=204,
    errors=(400,),
)
async def put_webhook_secret(request: web.Request, body: CaseWebhookSecret) -> None:
    """Set a chat webhook's secret: Telegram's secret_token, or the Viber bot's auth token."""
    channel = request.match_info["channel"]
    if channel not in ("viber", "telegram"):
        raise InvalidInput("channel", f"unknown chat channel {channel!r}; one of viber, telegram")
    async with request.app[DB].acquire() as conn:
        await webhooks.set_secret(conn, actor(request), channel, body.secret)
