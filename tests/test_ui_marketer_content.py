"""The marketer's content pages over HTTP: the template constructor (IC-01), the segment
builder, consents and stop lists (IC-07, IC-08), quiet hours and air-raid holding (IC-09)."""

from __future__ import annotations

import csv as csv_module
import io
import re
from collections.abc import Mapping

import aiohttp
from dispatch_helpers import make_clients
from ui_helpers import export_form, origin, post_form, ui_login

SMS = "Шановний(а) {{ first_name }}, борг {{ debt }} за ОР {{ or_number }}."


def body_fields(**fields: str) -> dict[str, str]:
    return {"b." + k.replace("__", "."): v for k, v in fields.items()}


async def save_template(client, token: str, path: str = "/ui/templates", **data: str):
    headers = {"Origin": origin(client)}
    return await client.post(
        path, data={"csrf_token": token, **data}, headers=headers, allow_redirects=False
    )


async def test_constructor_saves_versions_diffs_and_makes_one_current(
    client, demo_users, admin_conn
) -> None:
    token = await ui_login(client, "marketer")
    page = await client.get("/ui/templates/new")
    text = await page.text()
    assert page.status == 200 and "Новий шаблон" in text
    assert 'data-insert="first_name"' in text  # the palette
    first = await save_template(
        client,
        token,
        name="Борг",
        topic="debt",
        language="uk",
        **body_fields(
            uk__sms__text=SMS,
            en__sms__text="Dear {{ first_name }}, you owe {{ debt }}.",
            uk__viber__text="Борг {{ debt }}",
            uk__viber__button_text="Сплатити",
            uk__viber__button_url="{{ payment_url }}",
            uk__viber__image_url="https://example.org/a.png",
        ),
    )
    assert first.status == 303, await first.text()
    location = first.headers["Location"]
    found = re.search(r"/ui/templates/(\d+)", location)
    assert found
    template_id = int(found.group(1))
    shown = await (await client.get(location)).text()
    assert "Збережено як версію 1." in shown and "{{ first_name }}" in shown
    # A second version with an error: refused, the error beside its field at its line
    bad = await save_template(
        client,
        token,
        f"/ui/templates/{template_id}",
        name="Борг",
        topic="debt",
        **body_fields(uk__sms__text="Рядок один\nБорг {{ no_such_variable }}"),
    )
    page_text = await bad.text()
    assert bad.status == 400
    assert 'data-error-for="b.uk.sms.text"' in page_text and "Рядок 2" in page_text
    assert "no_such_variable" in page_text
    # A good second version
    second = await save_template(
        client,
        token,
        f"/ui/templates/{template_id}",
        name="Борг",
        topic="debt",
        **body_fields(uk__sms__text=SMS + " Дякуємо!"),
    )
    assert second.status == 303
    rows = await admin_conn.fetch(
        "SELECT version FROM message_template_versions WHERE template_id = $1 ORDER BY 1",
        template_id,
    )
    assert [r[0] for r in rows] == [1, 2]
    diff = await (await client.get(f"/ui/templates/{template_id}/diff?a=1&b=2")).text()
    assert 'class="diff-add">+' in diff and "Дякуємо!" in diff
    assert 'class="diff-del">-' in diff  # the Viber body and the translation went away
    versions = await (await client.get(f"/ui/templates/{template_id}")).text()
    assert "marketer" in versions  # who saved it
    # Make version 1 current again; the next save is version 3
    made = await post_form(client, f"/ui/templates/{template_id}/versions/1/current", {}, token)
    assert made.status == 200 and made.headers["HX-Location"] == f"/ui/templates/{template_id}"
    assert (
        await admin_conn.fetchval(
            "SELECT current_version FROM message_templates WHERE id = $1", template_id
        )
        == 1
    )
    third = await save_template(
        client,
        token,
        f"/ui/templates/{template_id}",
        name="Борг",
        topic="debt",
        **body_fields(uk__sms__text=SMS),
    )
    assert third.status == 303
    assert (
        await admin_conn.fetchval(
            "SELECT current_version FROM message_templates WHERE id = $1", template_id
        )
        == 3
    )
    listing = await (await client.get("/ui/templates")).text()
    assert f'data-template="{template_id}"' in listing


async def test_live_preview_for_a_client_with_sms_cost_and_transliteration(
    client, demo_users, admin_conn
) -> None:
    [client_id] = await make_clients(admin_conn, 1)
    token = await ui_login(client, "marketer")
    data = {
        "topic": "debt",
        "language": "uk",
        "channel": "sms",
        "client_id": str(client_id),
        **body_fields(uk__sms__text="Шановна {{ first_name }}, ОР {{ or_number }}."),
    }
    found = await post_form(client, "/ui/templates/preview", data, token)
    text = await found.text()
    assert found.status == 200, text
    assert "Шановна Олена" in text  # the client's real first name
    assert 'data-encoding="ucs2"' in text  # Cyrillic: UCS-2
    assert "Shanovna Olena" in text and 'data-encoding="gsm7"' in text  # transliterated
    # No client: the catalogue's example values; an unknown variable is shown, not a 500
    examples = await post_form(
        client,
        "/ui/templates/preview",
        {"channel": "sms", **body_fields(uk__sms__text="Hi {{ first_name }}")},
        token,
    )
    assert "Hi Мар" in await examples.text()
    wrong = await post_form(
        client,
        "/ui/templates/preview",
        {"channel": "sms", **body_fields(uk__sms__text="{{ nope }}")},
        token,
    )
    assert wrong.status == 200 and "preview-errors" in await wrong.text()
    # the API's draft preview too
    api = await client.post(
        "/api/v1/templates/preview",
        json={
            "template": {
                "name": "x",
                "topic": "debt",
                "variants": {"sms": {"text": "Борг {{ debt }}"}},
            },
            "client_id": client_id,
            "channel": "sms",
        },
        headers={"Origin": origin(client), "X-CSRF-Token": token},
    )
    assert api.status == 200, await api.text()
    assert (await api.json())["sms"]["encoding"] == "ucs2"


async def test_an_operator_sees_no_template_pages(client, demo_users) -> None:
    await ui_login(client, "operator_cc")
    refused = await client.get("/ui/templates/new")
    assert refused.status == 403


async def test_segment_builder_counts_saves_combines_imports_and_exports(
    client, demo_users, admin_conn
) -> None:
    ids = await make_clients(admin_conn, 6)
    await make_clients(admin_conn, 3, region="UA-30", start=101)
    token = await ui_login(client, "marketer")
    page = await (await client.get("/ui/segments/new")).text()
    assert 'id="segment-builder"' in page and "account.region" in page
    kyiv_oblast = '{"all": [{"attribute": "account.region", "op": "in", "value": ["UA-32"]}]}'
    count = await post_form(client, "/ui/segments/preview", {"condition": kyiv_oblast}, token)
    text = await count.text()
    assert 'data-count="6"' in text and 'data-exact="true"' in text
    negated = '{"not": {"all": [{"attribute": "account.region", "op": "in", "value": ["UA-32"]}]}}'
    count = await post_form(client, "/ui/segments/preview", {"condition": negated}, token)
    assert 'data-count="3"' in await count.text()
    bad = '{"all": [{"attribute": "account.region", "op": "gt", "value": 1}]}'
    refused = await post_form(client, "/ui/segments/preview", {"condition": bad}, token)
    assert 'data-path="condition.all[0].op"' in await refused.text()
    # Save: a dynamic segment, members materialised
    made = await client.post(
        "/ui/segments",
        data={"csrf_token": token, "name": "Київщина", "kind": "dynamic", "condition": kyiv_oblast},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert made.status == 303, await made.text()
    first = int(made.headers["Location"].rsplit("/", 1)[1])
    shown = await (await client.get(f"/ui/segments/{first}")).text()
    assert 'id="member-count">6<' in shown
    # A bad condition on save: the page again, the path named
    again = await client.post(
        f"/ui/segments/{first}",
        data={"csrf_token": token, "name": "Київщина", "kind": "dynamic", "condition": bad},
        headers={"Origin": origin(client)},
    )
    assert again.status == 400 and "condition.all[0].op" in await again.text()
    # Import a Client_ID list (two of them, one unknown, one not an id)
    csv = f"client_id\n{ids[0]}\n{ids[1]}\n999999\nабв\n".encode()
    form: dict[str, object] = {"csrf_token": token, "name": "Список", "file": csv}
    imported = await client.post(
        "/ui/segments/import",
        data=_multipart(form),
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert imported.status == 303, await imported.text()
    second_url = imported.headers["Location"]
    found = re.search(r"/ui/segments/(\d+)", second_url)
    assert found
    second = int(found.group(1))
    note = await (await client.get(second_url)).text()
    assert 'id="member-count">2<' in note and "import-note" in note
    # Exclusion: Київщина minus the list
    combined = await client.post(
        f"/ui/segments/{first}/combine",
        data={"csrf_token": token, "op": "exclusion", "other": str(second)},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert combined.status == 303
    third = await (await client.get(combined.headers["Location"])).text()
    assert 'id="member-count">4<' in third
    exported = await client.get(f"/api/v1/segments/{second}/export")
    assert (await exported.text()).split() == ["client_id", str(ids[0]), str(ids[1])]
    # The page's Export buttons go through the export engine: CSV and XLSX
    members_bar = export_form(note, "export-link")
    assert members_bar["kind"] == "segment_members" and members_bar["f.segment_id"] == str(second)
    csv_file = await post_form(client, "/ui/exports", {**members_bar, "format": "csv"}, token)
    assert csv_file.status == 200
    assert (await csv_file.text()).lstrip("\ufeff").split() == [
        "client_id",
        str(ids[0]),
        str(ids[1]),
    ]
    xlsx = await post_form(client, "/ui/exports", {**members_bar, "format": "xlsx"}, token)
    assert xlsx.status == 200 and (await xlsx.read())[:2] == b"PK"
    listing = await (await client.get("/ui/segments")).text()
    assert f'data-segment="{second}"' in listing
    # The API's import too
    api = await client.post(
        "/api/v1/segments/import?name=API",
        data=f"{ids[2]}\n".encode(),
        headers={"Content-Type": "text/csv", "Origin": origin(client), "X-CSRF-Token": token},
    )
    assert api.status == 201, await api.text()
    assert (await api.json())["segment"]["member_count"] == 1


def _multipart(fields: Mapping[str, object]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        if isinstance(value, bytes):
            form.add_field(key, value, filename="ids.csv", content_type="text/csv")
        else:
            form.add_field(key, str(value))
    return form


async def test_consents_on_the_card_and_page_import_and_stop_lists(
    client, demo_users, admin_conn
) -> None:
    ids = await make_clients(admin_conn, 3)
    token = await ui_login(client, "marketer")
    block = await (await client.get(f"/ui/clients/{ids[0]}/consents")).text()
    assert 'data-topic="debt"' in block
    # Opt out of debt messages by SMS: the block comes back with the change and its log
    changed = await post_form(
        client,
        f"/ui/clients/{ids[0]}/consents",
        {"consent_channel": "sms", "consent_topic": "debt", "consent_opted_in": "false"},
        token,
    )
    text = await changed.text()
    assert changed.status == 200, text
    assert re.search(r'data-channel="sms" data-state="no" class="consent explicit', text)
    assert "data-log=" in text and "marketer" in text
    row = await admin_conn.fetchrow(
        "SELECT opted_in, source FROM consents WHERE client_id = $1 AND channel = 'sms' "
        "AND topic = 'debt'",
        ids[0],
    )
    assert row["opted_in"] is False and row["source"] == "operator"
    # Bulk import: one good row, one refused
    csv = f"client_id,channel,topic,opted_in\n{ids[1]},email,debt,no\n{ids[2]},fax,debt,no\n"
    report = await client.post(
        "/ui/consents/import",
        data=_multipart({"csrf_token": token, "source": "import", "file": csv.encode()}),
        headers={"Origin": origin(client)},
    )
    text = await report.text()
    assert report.status == 200, text
    assert 'id="import-report"' in text and "row 3" not in text  # translated
    assert "рядок 3" in text
    assert await admin_conn.fetchval(
        "SELECT NOT opted_in FROM consents WHERE client_id = $1 AND channel = 'email'", ids[1]
    )
    # Stop list: a client, all topics, with the reason; then removed
    added = await client.post(
        "/ui/stop-lists",
        data={
            "csrf_token": token,
            "target": "client",
            "client_id": str(ids[2]),
            "reason": "Скарга клієнта",
        },
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert added.status == 303, await added.text()
    page = await (await client.get("/ui/stop-lists")).text()
    assert f'data-client="{ids[2]}"' in page and "Скарга клієнта" in page and "marketer" in page
    # ...exported as the page lists it, through the export engine (CSV and XLSX)
    stop_bar = export_form(page, "stop-list-export")
    assert stop_bar["kind"] == "stop_list" and stop_bar["f.show"] == "active"
    listed = await post_form(client, "/ui/exports", {**stop_bar, "format": "csv"}, token)
    assert listed.status == 200, await listed.text()
    rows = list(csv_module.reader(io.StringIO((await listed.read()).decode("utf-8-sig"))))
    assert rows[0][:5] == ["id", "client_id", "segment_id", "topics", "reason"]
    assert [(r[1], r[3], r[4], r[7]) for r in rows[1:]] == [
        (str(ids[2]), "", "Скарга клієнта", "marketer")
    ]
    xlsx = await post_form(client, "/ui/exports", {**stop_bar, "format": "xlsx"}, token)
    assert xlsx.status == 200 and (await xlsx.read())[:2] == b"PK"
    missing = await client.post(
        "/ui/stop-lists",
        data={"csrf_token": token, "target": "client", "reason": "x"},
        headers={"Origin": origin(client)},
    )
    assert missing.status == 400 and 'data-error-for="client_id"' in await missing.text()
    entry = await admin_conn.fetchval(
        "SELECT id FROM stop_list_entries WHERE client_id = $1", ids[2]
    )
    removed = await client.post(
        f"/ui/stop-lists/{entry}/delete",
        data={"csrf_token": token},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert removed.status == 303
    assert not await admin_conn.fetchval("SELECT count(*) FROM stop_list_entries")
    # The card shows the consents block
    card = await ui_login(client, "operator_cc")
    assert card
    shown = await (await client.get(f"/ui/clients/{ids[0]}")).text()
    assert f'hx-get="/ui/clients/{ids[0]}/consents"' in shown


async def test_contact_rules_quiet_hours_alerts_and_held_messages(
    client, demo_users, admin_conn
) -> None:
    token = await ui_login(client, "admin")
    page = await (await client.get("/ui/contact-rules")).text()
    assert 'data-region="UA-30"' in page
    added = await client.post(
        "/ui/contact-rules/quiet-hours",
        data={
            "csrf_token": token,
            "name": "Ніч",
            "start": "21:00",
            "end": "09:00",
            "weekdays": ["1", "2", "3", "4", "5"],
            "channels": ["sms"],
            "is_active": "true",
        },
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert added.status == 303, await added.text()
    window = await admin_conn.fetchrow(
        "SELECT id, weekdays, channels, start_time FROM quiet_hours_windows WHERE name = 'Ніч'"
    )
    assert list(window["weekdays"]) == [1, 2, 3, 4, 5] and list(window["channels"]) == ["sms"]
    bad = await client.post(
        f"/ui/contact-rules/quiet-hours/{window['id']}",
        data={"csrf_token": token, "name": "Ніч", "start": "25:00", "end": "09:00"},
        headers={"Origin": origin(client)},
    )
    assert bad.status == 400 and 'data-error-for="start"' in await bad.text()
    switched = await client.post(
        "/ui/contact-rules/alerts/UA-30",
        data={"csrf_token": token, "active": "true"},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert switched.status == 303, await switched.text()
    page = await (await client.get("/ui/contact-rules")).text()
    assert 'data-region="UA-30" data-active="true"' in page
    # Held messages, counted per campaign and region
    await admin_conn.execute(
        "INSERT INTO held_messages (message_id, campaign_id, client_id, step, reason, "
        "region_code) SELECT 'm' || i, NULL, i, 0, 'air_raid', 'UA-30' "
        "FROM generate_series(1, 3) i"
    )
    held = await (await client.get("/ui/contact-rules/held")).text()
    assert 'data-reason="air_raid" data-region="UA-30"' in held
    assert 'id="held-total">3<' in held
    api = await client.get("/api/v1/held-messages")
    assert (await api.json())[0]["held"] == 3
    # A marketer reads, and may not switch
    marketer = await ui_login(client, "marketer")
    assert (await client.get("/ui/contact-rules")).status == 200
    refused = await client.post(
        "/ui/contact-rules/alerts/UA-30",
        data={"csrf_token": marketer, "active": "false"},
        headers={"Origin": origin(client)},
    )
    assert refused.status == 403
