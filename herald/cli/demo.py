"""Demo staff users, one per role, so a new installation can be tried at once."""

from __future__ import annotations

import asyncpg
import msgspec

from crm import users
from crm.users import PasswordPolicy
from herald.audit import SYSTEM


class DemoUser(msgspec.Struct, frozen=True):
    login: str
    password: str
    full_name: str
    role: str


# Development-only credentials; `herald seed` prints them. Never seed them in production.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("operator.cc", "Herald-Occ-2026!", "Оксана Петренко", "operator_cc"),
    DemoUser("operator.cos", "Herald-Ocos-2026!", "Богдан Мельник", "operator_cos"),
    DemoUser("supervisor", "Herald-Sup-2026!", "Ірина Коваль", "supervisor"),
    DemoUser("marketer", "Herald-Mkt-2026!", "Мар'яна Шевчук", "marketer"),
    DemoUser("analyst", "Herald-Anl-2026!", "Тарас Бондаренко", "analyst"),
    DemoUser("admin", "Herald-Adm-2026!", "Адміністратор Herald", "admin"),
    DemoUser("integration", "Herald-Int-2026!", "Інтеграція VICIdial та кабінету", "integration"),
)


async def ensure_demo_users(conn: asyncpg.Connection, policy: PasswordPolicy) -> list[DemoUser]:
    """Create the demo users that do not exist yet; return all of them."""
    existing = {r["l"] for r in await conn.fetch("SELECT lower(login) AS l FROM users")}
    for demo in DEMO_USERS:
        if demo.login.lower() not in existing:
            await users.create_user(
                conn,
                SYSTEM,
                policy,
                login=demo.login,
                full_name=demo.full_name,
                password=demo.password,
                roles=[demo.role],
            )
    return list(DEMO_USERS)


def format_logins(demo_users: list[DemoUser]) -> str:
    width = max(len(d.login) for d in demo_users)
    lines = ["Demo logins (development only):"]
    lines += [f"  {d.role:<13} {d.login:<{width}}  {d.password}" for d in demo_users]
    return "\n".join(lines)
