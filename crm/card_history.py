"""The card's change history: the audit journal of the records the client card shows.

Who may read it: whoever may read the card (``clients.read``), since every value in it is
one the card itself shows that person; passports and tax ids are masked without
``clients.pii`` by the caller, as on the card. The journal as a whole (users, roles,
settings, other clients) stays ``audit.read``.

The card's records: the client itself, its accounts, their meters (and readings), its
contacts (``contacts.client_contacts``: the client's own and those linked to its
accounts) and its applications.
"""

from __future__ import annotations

import asyncpg

from crm import contacts
from crm.audit import AuditEntry


async def card_entities(conn: asyncpg.Connection, client_id: int) -> list[tuple[str, str]]:
    """(entity type, entity id) of every record the card of ``client_id`` shows."""
    keys = [("client", str(client_id))]
    rows = await conn.fetch(
        """
        SELECT 'account' AS t, a.id FROM accounts a WHERE a.client_id = $1
        UNION ALL
        SELECT 'meter', m.id FROM meters m JOIN accounts a ON a.id = m.account_id
        WHERE a.client_id = $1
        UNION ALL
        SELECT 'application', p.id FROM applications p WHERE p.client_id = $1
        """,
        client_id,
    )
    keys += [(r["t"], str(r["id"])) for r in rows]
    keys += [("contact", str(c.id)) for c in await contacts.client_contacts(conn, client_id)]
    return keys


async def card_history(
    conn: asyncpg.Connection, client_id: int, *, limit: int = 100
) -> list[AuditEntry]:
    """The newest ``limit`` journal entries of the card's records, newest first."""
    keys = await card_entities(conn, client_id)
    rows = await conn.fetch(
        """
        SELECT l.id, l.at, l.actor_id, l.actor_login, l.action, l.entity_type, l.entity_id,
               l.field, l.old_value, l.new_value, l.request_id
        FROM unnest($1::text[], $2::text[]) AS k(t, i)
        CROSS JOIN LATERAL (
            SELECT * FROM audit_log a WHERE a.entity_type = k.t AND a.entity_id = k.i
            ORDER BY a.at DESC, a.id DESC LIMIT $3) l
        ORDER BY l.at DESC, l.id DESC LIMIT $3
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
        limit,
    )
    return [AuditEntry(**dict(r)) for r in rows]
