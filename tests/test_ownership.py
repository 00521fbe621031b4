"""Every table has one owning module that writes it, and views hold no SQL (issue 18, point 4).

The scan reads Herald's own code (tests, seeders, benchmarks and migrations excluded) for
``INSERT INTO``, ``UPDATE``, ``DELETE FROM``, ``TRUNCATE`` and asyncpg's COPY helpers
naming a table that a migration creates. A table written from a module that is neither
its owner nor a named exception fails the test: give the write to the owner (a function
there), or, when the split is deliberate, add an exception here with its reason.
A statement whose table name is built at run time would escape the scan; Herald has none.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("admin_api", "crm", "dispatcher", "herald", "providers", "rules")
# Seeders, demo data and benchmarks load data in bulk on purpose; they are not the product.
NOT_SCANNED = (
    "herald/cli/seed/",
    "herald/cli/bench/",
    "herald/cli/demo",
    "herald/cli/screenshots.py",
)

# table -> the module(s) that own it (paths, or a package ending in "/").
OWNERS: dict[str, tuple[str, ...]] = {
    "account_contacts": ("crm/contacts.py",),
    "accounts": ("crm/mass_edit.py",),
    "air_raid_alerts": ("rules/air_raid.py",),
    "air_raid_states": ("rules/air_raid.py",),
    "applications": ("crm/activity.py",),
    "audit_log": ("herald/audit.py",),
    "billing_snapshots": ("crm/billing.py",),
    "business_calendar_spans": ("crm/cases/calendars.py",),
    "business_calendars": ("crm/cases/calendars.py",),
    "call_events": ("crm/cti.py",),
    "calls": ("crm/cti.py",),
    # The planner writes a campaign's batches; the bulk pipeline marks each one done in
    # the transaction that writes its outcomes (one owner per step of a batch's life).
    "campaign_batches": ("dispatcher/campaigns/planner.py", "dispatcher/send/pipeline.py"),
    # Only through the state machine's one statement (test below).
    "campaigns": ("dispatcher/campaigns/store.py",),
    "case_agent_presence_log": ("crm/cases/agents.py",),
    "case_agents": ("crm/cases/agents.py",),
    "case_automation_rules": ("crm/cases/automation.py",),
    "case_categories": ("crm/cases/categories.py",),
    "case_classification_rules": ("crm/cases/classify.py",),
    "case_email_outbox": ("dispatcher/realtime/case_replies.py",),
    "case_escalation_rules": ("crm/cases/sla_config.py",),
    "case_escalations": ("crm/cases/sla_evaluator.py",),
    "case_events": ("crm/cases/store.py",),
    "case_group_members": ("crm/cases/groups.py",),
    "case_groups": ("crm/cases/groups.py",),
    "case_notification_rules": ("dispatcher/realtime/case_notify.py",),
    "case_notifications": ("dispatcher/realtime/case_notify.py",),
    "case_notify_queue": ("dispatcher/realtime/case_notify.py",),
    "case_routing_rules": ("crm/cases/groups.py",),
    "case_rule_alerts": ("crm/cases/rule_engine.py",),
    "case_rule_outbox": ("crm/cases/rule_engine.py",),
    "case_rule_queue": ("crm/cases/rule_engine.py",),
    "case_rule_runs": ("crm/cases/rule_engine.py",),
    "case_rule_versions": ("crm/cases/rule_store.py",),
    "case_rules": ("crm/cases/rule_store.py",),
    "case_routing_settings": ("crm/cases/groups.py",),
    "case_settings": ("crm/cases/duplicates.py",),
    "case_sla_policies": ("crm/cases/sla_config.py",),
    "case_sla_breaches": ("crm/cases/sla_evaluator.py",),
    "case_sla_checks": ("crm/cases/sla_evaluator.py", "crm/cases/sla_replan.py"),
    "case_tasks": ("crm/cases/tasks.py",),
    "case_transitions": ("crm/cases/transitions.py",),
    "case_webhook_secrets": ("crm/cases/webhooks.py",),
    # A case is the case workflow's own row: each module of crm/cases is one step of it
    # (intake, transitions, routing, SLA, automation, duplicates, correction).
    "cases": ("crm/cases/",),
    "channel_usage": ("crm/activity.py",),
    "client_attributes": ("crm/segments/catalogue.py",),
    "consent_log": ("rules/consent.py",),
    "consents": ("rules/consent.py",),
    "contacts": ("crm/contacts.py",),
    "cti_extensions": ("crm/cti_extensions.py",),
    "cx_events": ("crm/activity.py",),
    # The outcome writer holds a message, the release sweep lets it go.
    "export_jobs": ("crm/exports.py",),
    "held_messages": ("dispatcher/outcomes.py", "dispatcher/receipts/holds.py"),
    "login_address_failures": ("crm/login_guard.py",),
    "login_devices": ("crm/login_guard.py",),
    "message_events": ("dispatcher/outcomes.py",),
    "message_template_versions": ("dispatcher/templating/store.py",),
    "message_templates": ("dispatcher/templating/store.py",),
    "meter_readings": ("crm/meters.py",),
    "meters": ("crm/meters.py",),
    "producer_events": ("dispatcher/realtime/intake.py",),
    "producers": ("dispatcher/realtime/producers.py",),
    "quiet_hours_windows": ("rules/quiet_hours.py",),
    "rate_limits": ("rules/rate_limit.py",),
    # Created and published by the realtime path; a batch of them is finished by the
    # realtime batch worker (its outcome transaction).
    "realtime_messages": ("dispatcher/realtime/messages.py", "dispatcher/send/realtime_batch.py"),
    "role_permissions": ("crm/rbac.py",),
    "roles": ("crm/rbac.py",),
    "schema_migrations": ("herald/cli/migrate.py",),
    "segment_attributes": ("crm/segments/catalogue.py",),
    "segment_dirty_clients": ("crm/segments/refresh.py",),
    # A segment's definition is the store's; its member sets and counts are written by
    # the materialiser (member_sets) and the incremental refresh.
    # The rollups are rewritten by SQL functions of migration 0070; the dirty-hour queue
    # is drained by crm.reports.rollups, dashboards and prices by their stores.
    "report_dirty_hours": ("crm/reports/rollups.py",),
    "report_case_hourly": ("crm/reports/rollups.py",),
    "report_case_daily": ("crm/reports/rollups.py",),
    "report_case_daily_lite": ("crm/reports/rollups.py",),
    "report_case_daily_agent": ("crm/reports/rollups.py",),
    "report_case_daily_topic": ("crm/reports/rollups.py",),
    "report_channel_prices": ("dispatcher/reports.py",),
    "report_dashboards": ("crm/reports/dashboards.py",),
    "segment_member_rows": ("crm/segments/member_sets.py", "crm/segments/refresh.py"),
    "segment_member_sets_retired": ("crm/segments/member_sets.py",),
    "segments": ("crm/segments/store.py",),
    "sessions": ("crm/users.py",),
    "shop_orders": ("crm/activity.py",),
    "sms_inbound": ("rules/consent.py",),
    "stop_list_entries": ("rules/stop_lists.py",),
    "timeline_events": ("crm/timeline.py",),
    "timeline_refs": ("crm/timeline.py",),
    "trigger_rules": ("dispatcher/realtime/triggers.py",),
    "user_roles": ("crm/users.py",),
    "users": ("crm/users.py",),
}

# (table, module) -> why that module writes a table it does not own.
EXCEPTIONS: dict[tuple[str, str], str] = {
    (
        "case_rule_outbox",
        "dispatcher/realtime/case_rule_outbox.py",
    ): "the rule engine queues webhooks and messages; the dispatcher's duty claims, retries "
    "and closes the rows it delivers (like case_email_outbox)",
    (
        "audit_log",
        "rules/consent.py",
    ): "a consent change journals itself in the statement that makes it (one round trip "
    "per import chunk); the rows have crm.audit's shape",
    (
        "case_agents",
        "crm/cases/groups.py",
    ): "adding members to a group registers them as agents (INSERT ... ON CONFLICT DO NOTHING)",
    (
        "case_agents",
        "crm/cases/routing.py",
    ): "round-robin routing stamps last_assigned_at in the assignment's transaction",
    (
        "case_events",
        "crm/cases/sla_replan.py",
    ): "a set-based replan writes the 'sla' events of thousands of cases in one statement",
    (
        "held_messages",
        "dispatcher/realtime/operator_send.py",
    ): "cancelling an operator's held message deletes its hold with the message (send-path "
    "module, reshaped by the rules work of issue 18)",
    (
        "message_templates",
        "dispatcher/realtime/operator_send.py",
    ): "the operator-send switch of a template is managed with the operator-send settings",
    (
        "realtime_messages",
        "dispatcher/realtime/operator_send.py",
    ): "an operator's cancel and a refused send finish the message in their own transaction",
    (
        "segments",
        "crm/segments/member_sets.py",
    ): "the materialiser swaps a segment's member set and count with the set it wrote",
    (
        "segments",
        "crm/segments/refresh.py",
    ): "the incremental refresh moves a segment's member count and materialised_at",
    ("users", "crm/login_guard.py"): "the lock-out columns (failed_logins, locked_until, lockouts)",
    ("users", "crm/ui_prefs.py"): "the user's own interface language (ui_language)",
}

_WRITE = re.compile(
    r"(?<![A-Za-z_])(?:INSERT\s+INTO|(?<!FOR\s)(?<!KEY\s)UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)"
    r"\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)"
    r"|copy_(?:records_)?to_table\(\s*['\"]([a-z_][a-z0-9_]*)['\"]"
)
_CREATE = re.compile(
    r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)"
    r"|ALTER\s+TABLE\s+[a-z_][a-z0-9_]*\s+RENAME\s+TO\s+([a-z_][a-z0-9_]*)"
)


def _tables() -> set[str]:
    """Every table the migrations (and the migrator, its own ledger) create."""
    sources = [f.read_text() for f in (ROOT / "migrations").glob("*.sql")]
    sources.append((ROOT / "herald" / "cli" / "migrate.py").read_text())
    return {m.group(1) or m.group(2) for text in sources for m in _CREATE.finditer(text)}


def _modules() -> list[tuple[str, str]]:
    found = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if not name.startswith(NOT_SCANNED):
                found.append((name, path.read_text()))
    return found


def _writers() -> dict[str, set[str]]:
    tables = _tables()
    writers: dict[str, set[str]] = {}
    for name, text in _modules():
        for m in _WRITE.finditer(text):
            table = m.group(1) or m.group(2)
            if table in tables:
                writers.setdefault(table, set()).add(name)
    return writers


def _owns(owner: str, module: str) -> bool:
    return module.startswith(owner) if owner.endswith("/") else module == owner


def test_the_scan_sees_the_writes_it_is_about() -> None:
    # Given the code base, when it is scanned, then the known writers are found (a scan
    # that found nothing would pass every other test here).
    writers = _writers()
    assert "dispatcher/campaigns/store.py" in writers["campaigns"]
    assert "dispatcher/outcomes.py" in writers["message_events"]  # COPY
    assert "crm/cases/store.py" in writers["cases"] or len(writers["cases"]) > 3
    assert len(writers) > 60


def test_every_table_is_written_only_by_its_owner_or_a_named_exception() -> None:
    stray = sorted(
        f"{table} written by {module} (owner: {', '.join(OWNERS.get(table, ('none listed',)))})"
        for table, modules in _writers().items()
        for module in modules
        if not any(_owns(o, module) for o in OWNERS.get(table, ()))
        and (table, module) not in EXCEPTIONS
    )
    assert not stray, "\n".join(stray)


def test_the_mapping_names_only_real_tables_and_live_exceptions() -> None:
    tables, writers = _tables(), _writers()
    assert not sorted(set(OWNERS) - tables), "owners of tables no migration creates"
    dead = sorted(f"{t} / {m}" for t, m in EXCEPTIONS if m not in writers.get(t, set()))
    assert not dead, "exceptions for writes that no longer exist: " + ", ".join(dead)


def test_campaign_status_is_written_by_the_state_machine_alone() -> None:
    status_writes = [
        (name, m.group(0))
        for name, text in _modules()
        for m in re.finditer(r"UPDATE\s+campaigns\b[^;]*?(?=\"\"\"|\"\s*,|\"\)|$)", text, re.S)
        if re.search(r"\bstatus\s*=", m.group(0))
    ]
    assert [name for name, _ in status_writes] == ["dispatcher/campaigns/store.py"], status_writes
    assert "m.target" in status_writes[0][1]  # the move of TRANSITIONS, in _move
    triggers = [
        f.name
        for f in (ROOT / "migrations").glob("*.sql")
        if re.search(r"UPDATE\s+campaigns\b", f.read_text(), re.IGNORECASE)
    ]
    assert not triggers


def test_views_hold_no_sql() -> None:
    # The admin API parses input, calls the domain and shapes the answer: no statements.
    sql = re.compile(
        r"\b(?:SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[a-z_*(]"
        r"|\.(?:fetch|fetchrow|fetchval|execute|executemany)\("
    )
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in sorted((ROOT / "admin_api").rglob("*.py"))
        for text in [path.read_text()]
        for m in sql.finditer(text)
    ]
    assert not found, found
