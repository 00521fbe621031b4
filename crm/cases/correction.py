"""The operator's correction of a case's classification, recorded as proposed vs chosen."""

from __future__ import annotations

import asyncpg
import msgspec

from crm.cases import duplicates, routing, store
from crm.cases.store import NewEvent
from crm.cases.types import Case, CaseType, Priority
from herald import audit
from herald.audit import Actor
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput


class ClassificationPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields the operator sets; those left out stay as they are."""

    category_id: Id | None = None
    case_type: CaseType | None = None
    priority: Priority | None = None


async def correct(
    conn: asyncpg.Connection, actor: Actor, case_id: int, patch: ClassificationPatch
) -> Case:
    """Set category, type and/or priority; the event keeps what was proposed on intake,
    what was there before and what the operator chose."""
    given = msgspec.to_builtins(patch)
    if not given:
        raise InvalidInput("category_id", "give category_id, case_type or priority")
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        if case.status == "closed":
            raise Conflict(f"case {case.number} is closed; its classification is final")
        if patch.category_id is not None and not await conn.fetchval(
            "SELECT is_active FROM case_categories WHERE id = $1", patch.category_id
        ):
            raise InvalidInput("category_id", f"no active case category {patch.category_id}")
        before = {
            "category_id": case.category_id,
            "case_type": case.case_type,
            "priority": case.priority,
        }
        chosen = {**before, **given}
        if chosen == before:
            return case
        await conn.execute(
            "UPDATE cases SET category_id = $2, case_type = $3, priority = $4, "
            "updated_at = herald_now() WHERE id = $1",
            case.id,
            chosen["category_id"],
            chosen["case_type"],
            chosen["priority"],
        )
        proposed = msgspec.to_builtins(case.proposed)
        await store.append_events(
            conn,
            actor,
            case.id,
            [
                NewEvent(
                    kind="classification",
                    data={"proposed": proposed, "before": before, "chosen": chosen},
                )
            ],
        )
        await audit.record(conn, actor, audit.field_changes("case", case.id, before, chosen))
        after = await store.get_case(conn, case.id)
        if chosen["category_id"] != before["category_id"]:
            await duplicates.refresh_repeat(conn, actor, after)
            after = await store.get_case(conn, case.id)
        after = await routing.place(conn, actor, after, reason="reclassification")
        await store.on_timeline(conn, after)
        return after
