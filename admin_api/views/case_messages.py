"""Messages to a case's client (issue 5 points 1 and 7): operator replies, info requests,
and the rules that send clients updates of their cases."""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from crm.cases import store
from dispatcher.realtime import case_notify, case_replies
from dispatcher.realtime import messages as realtime
from dispatcher.realtime.case_notify import (
    CaseNotification,
    NotificationRule,
    NotificationRuleSpec,
)
from dispatcher.realtime.case_replies import (
    EmailReplyStatus,
    InfoRequest,
    InfoRequested,
    ReplyAccepted,
    ReplyRequest,
)
from dispatcher.realtime.operator_send import SendRefused

log = logging.getLogger("herald.api.case_messages")

endpoints = EndpointTable("case messages")


class CaseMessages(msgspec.Struct):
    """What was sent to the case's client: e-mail replies and notifications, with status."""

    email_replies: list[EmailReplyStatus]
    notifications: list[CaseNotification] = []


def _refused(request: web.Request, refused: SendRefused) -> web.Response:
    return problem_response(
        request,
        refused.status,
        code=refused.code,
        detail=refused.detail,
        checks={"reason": refused.reason, "channels": refused.channels},
    )


async def _send_now(app: web.Application, outbox: list[int]) -> None:
    """Hand committed e-mails to SMTP now; whatever fails, the scheduler retries."""
    if not outbox:
        return
    try:
        await case_replies.deliver_due(app[DB], app[SETTINGS], ids=outbox)
    except Exception:  # the reply is committed: a failure here only delays it
        log.exception("sending e-mail replies %s failed; the scheduler retries", outbox)


@endpoints.post(
    "/api/v1/cases/{case_id}/replies",
    permission="cases.manage",
    body=ReplyRequest,
    response=ReplyAccepted,
    status=202,
    errors=(404, 409, 422),
)
async def post_reply(request: web.Request, body: ReplyRequest) -> ReplyAccepted | web.Response:
    """Reply to the client: e-mail in the case's thread, or SMS/Viber on the realtime path.

    Stored first, sent after commit; 409/422 say why a reply cannot go (no contact, no
    consent, stop list, anonymous case for SMS/Viber...)."""
    app = request.app
    try:
        async with app[DB].acquire() as conn:
            accepted, outbox, work = await case_replies.reply(
                conn,
                app[REDIS],
                app[SETTINGS],
                actor(request),
                path_int(request, "case_id"),
                body,
                case_notify.organisation_of(app[SETTINGS]),
            )
    except SendRefused as refused:
        return _refused(request, refused)
    await realtime.publish(await app[AMQP].publisher(), app[SETTINGS], work)
    await _send_now(app, outbox)
    if outbox:
        async with app[DB].acquire() as conn:
            status = await case_replies.outbox_status(conn, outbox[0])
        accepted = msgspec.structs.replace(accepted, status=status)
    return accepted


@endpoints.post(
    "/api/v1/cases/{case_id}/info-request",
    permission="cases.manage",
    body=InfoRequest,
    response=InfoRequested,
    errors=(404, 409),
)
async def post_info_request(request: web.Request, body: InfoRequest) -> InfoRequested:
    """Ask the client for more information: the case goes On Hold (if the transitions
    allow it) and the question is sent (e-mail in the thread, else the info_needed rules)."""
    app = request.app
    async with app[DB].acquire() as conn:
        result, outbox = await case_replies.request_info(
            conn,
            actor(request),
            path_int(request, "case_id"),
            body,
            case_notify.organisation_of(app[SETTINGS]),
        )
    await _send_now(app, outbox)
    return result


@endpoints.get(
    "/api/v1/cases/{case_id}/messages",
    permission="cases.read",
    response=CaseMessages,
    errors=(404,),
)
async def case_messages(request: web.Request) -> CaseMessages:
    """The e-mail replies of the case (SMTP status) and its client notifications (delivery)."""
    case_id = path_int(request, "case_id")
    async with request.app[DB].acquire() as conn:
        await store.get_case(conn, case_id)
        return CaseMessages(
            await case_replies.email_statuses(conn, case_id),
            await case_notify.of_case(conn, case_id),
        )


@endpoints.get(
    "/api/v1/case-notification-rules", permission="cases.admin", response=list[NotificationRule]
)
async def list_rules(request: web.Request) -> list[NotificationRule]:
    """Every notification rule, active or not."""
    async with request.app[DB].acquire() as conn:
        return await case_notify.list_rules(conn)


@endpoints.post(
    "/api/v1/case-notification-rules",
    permission="cases.admin",
    body=NotificationRuleSpec,
    response=NotificationRule,
    status=201,
    errors=(400,),
)
async def create_rule(request: web.Request, body: NotificationRuleSpec) -> NotificationRule:
    """A case event kind (and status) -> a template version and a Viber/SMS chain."""
    async with request.app[DB].acquire() as conn:
        return await case_notify.create_rule(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-notification-rules/{rule_id}",
    permission="cases.admin",
    body=NotificationRuleSpec,
    response=NotificationRule,
    errors=(400, 404),
)
async def update_rule(request: web.Request, body: NotificationRuleSpec) -> NotificationRule:
    """Change a rule (each changed field journalled)."""
    async with request.app[DB].acquire() as conn:
        return await case_notify.update_rule(
            conn, actor(request), path_int(request, "rule_id"), body
        )


@endpoints.delete(
    "/api/v1/case-notification-rules/{rule_id}", permission="cases.admin", status=204, errors=(404,)
)
async def delete_rule(request: web.Request) -> None:
    """Switch the rule off (kept: the notifications it made name it)."""
    async with request.app[DB].acquire() as conn:
        await case_notify.deactivate_rule(conn, actor(request), path_int(request, "rule_id"))
