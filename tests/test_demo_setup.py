"""The demo stand's configuration (herald/cli/demo_setup.py): what `herald up` adds so that the
demo scenario's Blocks 2-3 can be shown, created once and kept on later runs."""

from __future__ import annotations

from test_card import make_client
from ui_helpers import post_form, ui_login

from herald.cli.demo_setup import SLA_POLICIES, TEMPLATES, ensure_demo_setup


async def test_demo_setup_is_idempotent_and_fills_the_send_panel_and_the_sla(
    client, demo_users, admin_conn
) -> None:
    # Given a fresh stand: everything is created once
    first = await ensure_demo_setup(admin_conn)
    assert sorted(first.templates) == sorted(TEMPLATES) and first.calendar
    assert len(first.sla_policies) == len(SLA_POLICIES) and len(first.escalation_rules) == 2
    assert {"cc_l1", "service_centre"} <= set(first.group_members)
    assert sorted(first.notifications_on) == ["Змінено строк звернення", "Надано відповідь"]
    # an admin switches a notification off again: a second run keeps that and adds nothing
    await admin_conn.execute(
        "UPDATE case_notification_rules SET is_active = false WHERE name = 'Надано відповідь'"
    )
    again = await ensure_demo_setup(admin_conn)
    assert again.templates == [] and not again.calendar and again.sla_policies == []
    assert again.notifications_on == [] and again.group_members == []
    assert not await admin_conn.fetchval(
        "SELECT is_active FROM case_notification_rules WHERE name = 'Надано відповідь'"
    )

    # The operator's send panel offers the three templates, rendered for the client
    client_id, _ = await make_client(admin_conn, ("1000000901",))
    token = await ui_login(client, "operator_cc")
    card = await (await client.get(f"/ui/clients/{client_id}")).text()
    ids = dict(await admin_conn.fetch("SELECT name, id FROM message_templates WHERE operator_send"))
    for name in TEMPLATES:
        assert f'<option value="{ids[name]}">{name}</option>' in card
        for channel in ("sms", "viber"):
            shown = await client.get(
                f"/ui/clients/{client_id}/send/preview",
                params={"template_id": str(ids[name]), "channel": channel},
            )
            text = await shown.text()
            assert shown.status == 200 and 'id="preview-text"' in text, text
    bank = await client.get(
        f"/ui/clients/{client_id}/send/preview",
        params={"template_id": str(ids["Банківські реквізити для оплати"]), "channel": "sms"},
    )
    assert "UA213223130000026007233566001" in await bank.text()

    # A walk-in case gets its SLA from the demo policies (urgent technical: the tightest)
    response = await post_form(
        client,
        "/ui/cases/new",
        {
            "text": "Запах газу в під'їзді",
            "client_id": str(client_id),
            "case_type": "technical",
            "priority": "urgent",
        },
        token,
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    case_id = int(response.headers["Location"].rsplit("/", 1)[1])
    policy = await admin_conn.fetchval(
        "SELECT p.name FROM cases c JOIN case_sla_policies p ON p.id = c.sla_policy_id "
        "WHERE c.id = $1",
        case_id,
    )
    assert policy == "Технічні, терміново (аварійні)"
    page = await (await client.get(f"/ui/cases/{case_id}")).text()
    assert 'class="sla sla-ok' in page  # running or, out of hours, standing still
