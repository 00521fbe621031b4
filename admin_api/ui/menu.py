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
    group: str = ""
    # The page loads scripts of its own (in <head>): it is opened as a whole page.
    full_load: bool = False


class MenuGroup(msgspec.Struct, frozen=True):
    """Several entries of one workspace behind one drop-down of the top bar."""

    label: str
    key: str
    items: tuple[MenuItem, ...]
    active: bool = False


GROUPS = {
    "marketing": N_("Marketing"),
    "analytics": N_("Analytics"),
    "admin": N_("Administration"),
}
# Up to this many entries the top bar lists them all; beyond it (an administrator sees
# every page) each workspace's entries fold into a drop-down, so the bar fits at 1024 px.
FLAT_LIMIT = 9


# In the order of the workspace: the operator's, the supervisor's, the marketer's, the
# analyst's and the administrator's pages; each role sees only the entries it may open.
ITEMS: tuple[MenuItem, ...] = (
    MenuItem(N_("Clients"), "/ui/search", "clients.read", "search"),
    MenuItem(N_("Cases"), "/ui/cases", "cases.read", "cases"),
    MenuItem(N_("New case"), "/ui/cases/new", "cases.manage", "case-new"),
    MenuItem(N_("Tasks"), "/ui/tasks", "cases.manage", "tasks"),
    MenuItem(N_("Supervisor"), "/ui/supervisor", "cases.supervise", "supervisor"),
    MenuItem(N_("Campaigns"), "/ui/campaigns", "campaigns.read", "campaigns", group="marketing"),
    MenuItem(N_("Triggers"), "/ui/triggers", "triggers.read", "triggers", group="marketing"),
    MenuItem(N_("Templates"), "/ui/templates", "templates.read", "templates", group="marketing"),
    MenuItem(N_("Segments"), "/ui/segments", "segments.read", "segments", group="marketing"),
    MenuItem(N_("Stop lists"), "/ui/stop-lists", "rules.read", "stop-lists", group="marketing"),
    MenuItem(
        N_("Contact rules"), "/ui/contact-rules", "rules.read", "contact-rules", group="marketing"
    ),
    MenuItem(N_("Reports"), "/ui/reports", "reports.own", "reports", group="analytics"),
    MenuItem(N_("Dashboards"), "/ui/dashboards", "reports.own", "dashboards", group="analytics"),
    MenuItem(N_("Users and settings"), "/ui/admin", "users.manage", "admin", group="admin"),
    MenuItem(
        N_("Automation"),
        "/ui/automation",
        "cases.automation",
        "automation",
        full_load=True,
        group="admin",
    ),
    MenuItem(N_("Audit"), "/ui/audit", "audit.read", "audit", group="admin"),
)


def menu_for(permissions: Set[str], path: str) -> list[MenuItem]:
    """The entries this person may open, the current one marked active."""
    found = [i for i in ITEMS if i.permission in permissions]
    best = max(
        (i for i in found if path.startswith(i.href)), key=lambda i: len(i.href), default=None
    )
    return [msgspec.structs.replace(i, active=i is best) for i in found]


def top_bar(permissions: Set[str], path: str) -> list[MenuItem | MenuGroup]:
    """The top bar's entries: all of them when few, else each workspace's in a drop-down
    (a group of one stays a plain entry)."""
    found = menu_for(permissions, path)
    if len(found) <= FLAT_LIMIT:
        return list(found)
    entries: list[MenuItem | MenuGroup] = []
    for item in found:
        members = tuple(i for i in found if item.group and i.group == item.group)
        if len(members) < 2:
            entries.append(item)
        elif item is members[0]:
            entries.append(
                MenuGroup(
                    GROUPS[item.group], item.group, members, active=any(i.active for i in members)
                )
            )
    return entries


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
