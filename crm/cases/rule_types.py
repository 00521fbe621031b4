"""The shape of a case rule (issue 15): when (a trigger), if (an and/or/not tree of
conditions) and then (an ordered list of actions). Decoded and validated by msgspec; the
checks that need the database (statuses, categories, groups, users, templates) and the
safety of regular expressions are in ``crm.cases.rule_engine.check``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from crm.cases.groups import GroupCode
from crm.cases.types import Priority, Status
from herald.bounds import Id, Version

TriggerType = Literal[
    "case_created",
    "field_changed",
    "client_replied",
    "agent_replied",
    "sla_warning",
    "sla_breach",
    "idle",
    "task_done",
    "scheduled",
]
TRIGGER_TYPES: tuple[str, ...] = TriggerType.__args__  # type: ignore[attr-defined]  # a Literal has them
ChangedField = Literal["status", "priority", "category", "case_type", "group", "assignee"]
TIME_TRIGGERS = frozenset({"idle", "scheduled"})

Field = Literal[
    "status",
    "priority",
    "category",
    "case_type",
    "channel",
    "group",
    "assignee",
    "is_repeat",
    "identified",
    "tags",
    "text",
    "subject",
    "client.segments",
    "client.consumer_types",
    "client.registers",
    "client.debt",
]
FIELDS: tuple[str, ...] = Field.__args__  # type: ignore[attr-defined]  # a Literal has them
Op = Literal[
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "ge",
    "lt",
    "le",
    "contains",
    "regex",
    "has",
    "under",
    "is_set",
    "is_not_set",
]
OPS: tuple[str, ...] = Op.__args__  # type: ignore[attr-defined]  # a Literal has them
Value = str | float | bool | list[str] | None
Text = Annotated[str, Meta(min_length=1, max_length=2000)]


class Trigger(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``fields``: for field_changed, the fields watched (empty: any). ``hours``: for idle,
    business hours without a status change or a message. ``at``: for scheduled, the
    business-local time of day ("HH:MM") the rule looks at every open case."""

    type: TriggerType
    fields: Annotated[list[ChangedField], Meta(max_length=6)] = []
    hours: Annotated[int, Meta(ge=1, le=8760)] | None = None
    at: Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = None


class Cond(msgspec.Struct, tag="cond", tag_field="kind", forbid_unknown_fields=True):
    field: Field
    op: Op
    value: Value = None


class AllOf(msgspec.Struct, tag="and", tag_field="kind", forbid_unknown_fields=True):
    items: Annotated[list[Node], Meta(min_length=1, max_length=30)]


class AnyOf(msgspec.Struct, tag="or", tag_field="kind", forbid_unknown_fields=True):
    items: Annotated[list[Node], Meta(min_length=1, max_length=30)]


class Not(msgspec.Struct, tag="not", tag_field="kind", forbid_unknown_fields=True):
    item: Node


Node = Cond | AllOf | AnyOf | Not


class _Action(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class SetStatus(_Action, tag="set_status"):
    status: Status


class SetPriority(_Action, tag="set_priority"):
    priority: Priority


class SetCategory(_Action, tag="set_category"):
    category: Annotated[str, Meta(min_length=1, max_length=64)]


class SetGroup(_Action, tag="set_group"):
    group_code: GroupCode


class SetAssignee(_Action, tag="set_assignee"):
    user_id: Id


class Route(_Action, tag="route"):
    """Back to the routing rules: the case goes to the group they choose and is assigned
    by that group's mode (round robin or skills) by the routing pass."""


class AddTag(_Action, tag="add_tag"):
    tag: Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^[\w.-]+$")]


class AddNote(_Action, tag="add_note"):
    text: Text


class SendMessage(_Action, tag="send_message"):
    """A message to the client by a template, through the dispatcher's realtime path
    (consent, stop lists and quiet hours apply)."""

    template_id: Id
    template_version: Version | None = None
    channel_chain: Annotated[list[Literal["viber", "sms"]], Meta(min_length=1, max_length=2)] = (
        msgspec.field(default_factory=lambda: ["viber", "sms"])
    )


class NotifySupervisors(_Action, tag="notify_supervisors"):
    text: Text


class CreateTask(_Action, tag="create_task"):
    group_code: GroupCode
    title: Annotated[str, Meta(min_length=1, max_length=500)]
    due_hours: Annotated[int, Meta(ge=1, le=8760)] = 24


class CallWebhook(_Action, tag="webhook"):
    url: Annotated[str, Meta(min_length=8, max_length=2000, pattern=r"^https?://[^\s]+$")]


Action = (
    SetStatus
    | SetPriority
    | SetCategory
    | SetGroup
    | SetAssignee
    | Route
    | AddTag
    | AddNote
    | SendMessage
    | NotifySupervisors
    | CreateTask
    | CallWebhook
)
ACTION_TYPES: tuple[str, ...] = (
    "set_status",
    "set_priority",
    "set_category",
    "set_group",
    "set_assignee",
    "route",
    "add_tag",
    "add_note",
    "send_message",
    "notify_supervisors",
    "create_task",
    "webhook",
)


class CaseRuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    trigger: Trigger
    actions: Annotated[list[Action], Meta(min_length=1, max_length=20)]
    condition: Node | None = None
    position: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    is_active: bool = False
    stop_processing: bool = False


class CaseRule(msgspec.Struct):
    id: int
    name: str
    position: int
    is_active: bool
    stop_processing: bool
    trigger: Trigger
    condition: Node | None
    actions: list[Action]
    version: int
    created_by: str
    created_at: dt.datetime
    updated_by: str
    updated_at: dt.datetime


class CaseRulePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Switch a rule on or off, or move it (without a new form)."""

    is_active: bool | None = None
    position: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None


class CaseRuleVersion(msgspec.Struct):
    rule_id: int
    version: int
    action: str
    spec: dict[str, Any]
    by_login: str
    at: dt.datetime


class CaseRuleDiff(msgspec.Struct):
    path: str
    old: Any
    new: Any


class DryRunRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Against an existing case (by id or number): a saved rule, or a rule being edited."""

    case_number: Annotated[str, Meta(min_length=1, max_length=40)] | None = None
    case_id: Id | None = None
    rule_id: Id | None = None
    rule: CaseRuleSpec | None = None


class ConditionTrace(msgspec.Struct):
    path: str
    result: bool
    detail: str | None = None


class ActionOutcome(msgspec.Struct):
    type: str
    ok: bool
    detail: str


class DryRunResult(msgspec.Struct):
    case_id: int
    case_number: str
    matched: bool
    trace: list[ConditionTrace]
    actions: list[ActionOutcome]
    before: dict[str, Any]
    after: dict[str, Any]


class CaseRuleRun(msgspec.Struct):
    id: int
    case_id: int
    rule_id: int
    version: int
    trigger: str
    depth: int
    outcome: str
    actions: list[dict[str, Any]]
    at: dt.datetime


class CaseRuleAlert(msgspec.Struct):
    id: int
    case_id: int
    case_number: str
    rule_id: int
    group_code: str | None
    text: str
    created_at: dt.datetime
