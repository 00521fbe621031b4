"""The menu: one entry per workspace page, shown to whoever holds its permission.

What a role may not do is hidden here and refused by the server (the page routes declare
the same permissions). Labels are English message ids, translated in the template.
"""

from __future__ import annotations

from collections.abc import Set

import msgspec


def N_(message: str) -> str:
    """Mark a message id for extraction; the template translates it."""
    return message


class MenuItem(msgspec.Struct, frozen=True):
    label: str
    href: str
    permission: str
    key: str
    active: bool = False
    # The page loads scripts of its own (in <head>): it is opened as a whole page.
    full_load: bool = False


# In the order of the workspace. Parts 2 and 3 of the UI (marketer, supervisor, admin,
# analytics) add their pages here; until then their entries lead to a page saying so.
ITEMS: tuple[MenuItem, ...] = (
    MenuItem(N_("Clients"), "/ui/search", "clients.read", "search"),
    MenuItem(N_("Cases"), "/ui/cases", "cases.read", "cases"),
    MenuItem(N_("New case"), "/ui/cases/new", "cases.manage", "case-new"),
    MenuItem(N_("Tasks"), "/ui/tasks", "cases.manage", "tasks"),
    MenuItem(N_("Supervisor"), "/ui/section/supervisor", "cases.supervise", "supervisor"),
    MenuItem(N_("Automation"), "/ui/automation", "cases.automation", "automation", full_load=True),
    MenuItem(N_("Campaigns"), "/ui/section/campaigns", "campaigns.manage", "campaigns"),
    MenuItem(N_("Segments"), "/ui/section/segments", "segments.read", "segments"),
    MenuItem(N_("Reports"), "/ui/section/reports", "audit.read", "reports"),
    MenuItem(N_("Administration"), "/ui/section/admin", "users.manage", "admin"),
)


def menu_for(permissions: Set[str], path: str) -> list[MenuItem]:
    """The entries this person may open, the current one marked active."""
    found = [i for i in ITEMS if i.permission in permissions]
    best = max(
        (i for i in found if path.startswith(i.href)), key=lambda i: len(i.href), default=None
    )
    return [msgspec.structs.replace(i, active=i is best) for i in found]


def home_for(permissions: Set[str]) -> str:
    """Where a person lands after logging in: the first page of their menu."""
    found = [i for i in ITEMS if i.permission in permissions]
    return found[0].href if found else "/ui/account"


ROLE_NAMES = {
    "operator_cc": N_("Contact-centre operator"),
    "operator_cos": N_("Service-centre operator"),
    "supervisor": N_("Supervisor"),
    "marketer": N_("Marketer"),
    "analyst": N_("Analyst"),
    "admin": N_("Administrator"),
    "integration": N_("Integration"),
}
