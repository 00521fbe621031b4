"""Data of the case module that crosses the API: cases, events, configuration."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from crm.cases.sla_types import CaseSla

Channel = Literal["call", "viber", "telegram", "site", "cabinet", "email", "app", "walk_in"]
CHANNELS: tuple[str, ...] = (
    "call",
    "viber",
    "telegram",
    "site",
    "cabinet",
    "email",
    "app",
    "walk_in",
)
CaseType = Literal["technical", "financial", "informational"]
Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal["new", "in_progress", "on_hold", "resolved", "closed"]
ConsumerType = Literal["household", "household_heating", "condominium", "religious", "budget"]
IdentifiedBy = Literal["client_id", "or_number", "phone", "email", "operator"]


class CaseContact(msgspec.Struct):
    """The contact details as the channel gave them (phone in E.164 when it parsed)."""

    name: str | None
    phone: str | None
    email: str | None
    or_number: str | None


class CaseProposal(msgspec.Struct):
    """What auto-classification proposed on intake, and the rule that proposed it."""

    category_id: int | None
    case_type: str | None
    priority: str | None
    rule_id: int | None


class Case(msgspec.Struct):
    id: int
    number: str
    channel: str
    status: str
    priority: str
    case_type: str | None
    category_id: int | None
    category_code: str | None
    client_id: int | None
    account_id: int | None
    identified_by: str | None
    anonymous: bool
    candidate_client_ids: list[int]
    contact: CaseContact
    subject: str | None
    text: str
    proposed: CaseProposal
    is_repeat: bool
    repeat_of_id: int | None
    duplicate_of_id: int | None
    merged_into_id: int | None
    group_code: str | None
    assignee_id: int | None
    created_by_login: str
    created_at: dt.datetime
    status_changed_at: dt.datetime
    last_inbound_at: dt.datetime
    updated_at: dt.datetime


class CaseSummary(msgspec.Struct):
    """One line of the queue or of a client's case history."""

    id: int
    number: str
    channel: str
    status: str
    priority: str
    case_type: str | None
    category_id: int | None
    client_id: int | None
    subject: str | None
    is_repeat: bool
    duplicate_of_id: int | None
    merged_into_id: int | None
    assignee_id: int | None
    created_at: dt.datetime
    status_changed_at: dt.datetime
    # Filled for queue pages (crm.cases.sla.sla_for); absent in nested lists.
    sla: CaseSla | None = None


class CaseClientCandidate(msgspec.Struct):
    """A client the contact of an anonymous case matched."""

    client_id: int
    last_name: str
    first_name: str
    middle_name: str | None


class CaseDetail(msgspec.Struct):
    """A case with what the operator needs when it opens (SR-05, SR-06)."""

    case: Case
    previous_cases: list[CaseSummary]
    candidates: list[CaseClientCandidate]
    duplicates: list[CaseSummary]
    merged_cases: list[CaseSummary]
    sla: CaseSla | None = None


class CaseEvent(msgspec.Struct):
    id: int
    case_id: int
    at: dt.datetime
    kind: str
    actor_id: int | None
    actor_login: str
    channel: str | None
    direction: str | None
    external_id: str | None
    from_status: str | None
    to_status: str | None
    body: str | None
    data: Any


class IntakeResult(msgspec.Struct):
    """What an inbound item became: a new case, or a message appended to an open one."""

    case_id: int
    number: str
    status: str
    created: bool
    appended: bool
    # The same item (same external id) was received before: nothing was added.
    replayed: bool = False


class CaseCategory(msgspec.Struct):
    id: int
    parent_id: int | None
    code: str
    name_uk: str
    name_en: str
    position: int
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseClassificationRule(msgspec.Struct):
    id: int
    name: str
    position: int
    is_active: bool
    keywords: list[str]
    channels: list[str]
    consumer_types: list[str]
    has_debt: bool | None
    identified: bool | None
    category_id: int | None
    case_type: str | None
    priority: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseAutomationRule(msgspec.Struct):
    id: int
    name: str
    is_active: bool
    trigger: str
    from_status: str
    to_status: str
    idle_hours: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseStatusInfo(msgspec.Struct):
    code: str
    name_uk: str
    name_en: str
    position: int
    is_final: bool


class CaseTransition(msgspec.Struct, forbid_unknown_fields=True):
    from_status: Status
    to_status: Status


class CaseSettings(msgspec.Struct):
    repeat_window_days: int
    duplicate_window_minutes: int
    duplicate_similarity_percent: int
    updated_at: dt.datetime
    updated_by: str
