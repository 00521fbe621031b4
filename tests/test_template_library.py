"""The template library against PostgreSQL and the API: versions, old versions, preview, catalogue."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from conftest import login_as
from dispatch_helpers import make_clients

from dispatcher.recipients import Organisation, load_recipients
from dispatcher.templating import store as template_store
from dispatcher.templating.env import CASE_VARIABLES
from dispatcher.templating.sms_text import sms_stats
from dispatcher.templating.templates import SmsCost, TemplateEngine
from herald.settings import Settings
from rules.consent import UnsubscribeLinks

NB = "\u00a0"

V1: dict[str, Any] = {
    "name": "Борг",
    "topic": "debt",
    "variants": {"sms": {"text": "{{ first_name }}, борг {{ debt|money }} за ОР {{ or_number }}"}},
}
V2 = {
    "name": "Борг (з перекладом)",
    "topic": "debt",
    "variants": {
        "sms": {"text": "{{ first_name }}, борг {{ debt|money }} ({{ region }})"},
        "viber": {
            "text": "Борг {{ debt|money }}",
            "button_text": "Сплатити",
            "button_url": "{{ payment_url }}",
        },
        "email": {
            "subject": "Борг {{ debt|money }}",
            "html": '<p>Борг {{ debt|money }}.</p><p><a href="{{ unsubscribe_url }}">'
            "Відписатися</a></p>",
        },
        "chatbot": {
            "text": "Борг {{ debt|money }}",
            "buttons": [{"text": "Сплатити", "url": "{{ payment_url }}"}, {"text": "Оператор"}],
        },
        "ivr": {"text": "Ваш борг становить {{ debt|money }}. Дякуємо."},
        "translations": {
            "en": {
                "sms": {"text": "{{ first_name }}, you owe {{ debt|money }} ({{ region }})"},
                "email": {
                    "subject": "Debt {{ debt|money }}",
                    "html": '<p>You owe {{ debt|money }}.</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
                },
            }
        },
    },
}


async def _ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def _bad(response: Any, field: str, status: int = 400) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    if status == 400:
        assert body["errors"][0]["field"] == field, body
    return body


def _organisation(settings: Settings) -> Organisation:
    return Organisation(
        service_centre=settings.org_service_centre,
        contact_phone=settings.org_contact_phone,
        cabinet_url=settings.org_cabinet_url,
        app_url=settings.org_app_url,
        payment_url=settings.org_payment_url,
    )


async def test_every_save_is_a_version_and_a_pinned_version_stays_readable_and_sendable(
    client,
    demo_users,
    settings: Settings,
    admin_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
) -> None:
    marketer = await login_as(client, "marketer")
    [someone] = await make_clients(admin_conn, 1, start=100)
    # Given a template saved once, and a campaign pinning that version
    saved = await _ok(await client.post("/api/v1/templates", headers=marketer, json=V1), 201)
    template_id = saved["template"]["id"]
    campaign = await _ok(
        await client.post(
            "/api/v1/campaigns",
            headers=marketer,
            json={
                "name": "Борги",
                "template_id": template_id,
                "channel_chain": ["sms"],
                "audience": {"kind": "clients", "client_ids": [someone]},
            },
        ),
        201,
    )
    assert campaign["template_version"] == 1
    # When the template is saved again with five channels and an English translation
    saved = await _ok(
        await client.post(f"/api/v1/templates/{template_id}/versions", headers=marketer, json=V2),
        201,
    )
    # Then that is version 2, with each translation's preview and SMS cost
    assert saved["template"]["current_version"] == 2
    assert saved["template"]["current"]["variants"]["translations"]["en"]["sms"]["text"].startswith(
        "{{ first_name }}, you owe"
    )
    assert saved["translations"]["en"]["sms"] == {
        "encoding": "ucs2",
        "characters": 48,
        "segments": 1,
    }
    assert {p["type"] for p in saved["translations"]["en"]["preview"]} == {"sms", "email"}
    # and both versions are listed, newest first, page by page
    page = await _ok(
        await client.get(f"/api/v1/templates/{template_id}/versions?limit=1", headers=marketer)
    )
    assert [v["version"] for v in page["items"]] == [2] and page["next_before_version"] == 2
    page = await _ok(
        await client.get(
            f"/api/v1/templates/{template_id}/versions?limit=1&before_version=2", headers=marketer
        )
    )
    assert [v["version"] for v in page["items"]] == [1]
    old = await _ok(
        await client.get(f"/api/v1/templates/{template_id}/versions/1", headers=marketer)
    )
    assert old["variants"]["sms"]["text"] == V1["variants"]["sms"]["text"]
    assert old["variants"]["translations"] is None
    # the campaign still pins version 1, which the sender compiles and renders as it was
    campaign = await _ok(await client.get(f"/api/v1/campaigns/{campaign['id']}", headers=marketer))
    assert campaign["template_version"] == 1
    engine = TemplateEngine()
    v1, _ = await template_store.load_for_sending(app_conn, engine, template_id, 1)
    [recipient] = await load_recipients(app_conn, [someone], _organisation(settings))
    assert v1.render("sms", recipient.variables).text == (
        f"Олена, борг 120,50{NB}грн за ОР 0000000100"
    )
    v2, _ = await template_store.load_for_sending(app_conn, engine, template_id, 2)
    assert v2.channels == ("sms", "viber", "email", "chatbot", "ivr")
    assert v2.render("ivr", recipient.variables).text == (
        f"Ваш борг становить 120,50{NB}грн. Дякуємо."
    )
    # Unknown templates and versions are 404s
    await _bad(await client.get("/api/v1/templates/999/versions", headers=marketer), "", 404)
    await _bad(
        await client.get(f"/api/v1/templates/{template_id}/versions/3", headers=marketer), "", 404
    )


async def test_saving_new_variants_is_validated_naming_the_field(client, demo_users) -> None:
    marketer = await login_as(client, "marketer")
    cases = [
        ({"ivr": {"text": "Сплатіть тут: {{ payment_url }}"}}, "variants.ivr.text"),
        (
            {"sms": {"text": "Борг"}, "translations": {"en": {"viber": {"text": "Debt"}}}},
            "variants.translations.en.viber",
        ),
        (
            {"sms": {"text": "Борг"}, "translations": {"en": {"sms": {"text": "{{ dept }}"}}}},
            "variants.translations.en.sms.text",
        ),
        (
            {"chatbot": {"text": "Т", "buttons": [{"text": "Так", "url": "http://x.ua"}]}},
            "variants.chatbot.buttons.0.url",
        ),
        (
            {"sms": {"text": "Т"}, "translations": {"de": {"sms": {"text": "T"}}}},
            "variants.translations.de",
        ),
        ({"viber": {"text": "Т", "button_text": "Сплатити"}}, "variants.viber.button_url"),
    ]
    for variants, field in cases:
        await _bad(
            await client.post(
                "/api/v1/templates",
                headers=marketer,
                json={"name": "x", "topic": "debt", "variants": variants},
            ),
            field,
        )


async def test_a_version_stored_in_the_old_shape_stays_readable_and_sendable(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    # Given a version written before chatbot, IVR and translations existed (one language)
    template_id = await admin_conn.fetchval(
        "INSERT INTO message_templates (name, topic) VALUES ('Старий', 'debt') RETURNING id"
    )
    await admin_conn.execute(
        "INSERT INTO message_template_versions (template_id, version, language, variants) "
        "VALUES ($1, 1, 'en', $2)",
        template_id,
        {
            "sms": {"text": "You owe {{ debt|money }}", "transliterate": None},
            "viber": None,
            "email": None,
        },
    )
    # When it is read through the API and compiled for a send
    read = await _ok(
        await client.get(
            f"/api/v1/templates/{template_id}/versions/1",
            headers=await login_as(client, "marketer"),
        )
    )
    compiled, urgent = await template_store.load_for_sending(
        app_conn, TemplateEngine(), template_id, 1
    )
    # Then it reads with the new fields empty and renders in its language for anyone
    assert read["variants"]["sms"]["text"] == "You owe {{ debt|money }}"
    assert read["variants"]["chatbot"] is None and read["variants"]["translations"] is None
    assert urgent is False and compiled.language_for("sms", "uk") == "en"
    assert compiled.render("sms", {"debt": 5}).text == f"You owe UAH{NB}5.00"


async def test_preview_for_a_chosen_client(
    client, demo_users, settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    operator = await login_as(client, "operator_cc")
    marketer = await login_as(client, "marketer")
    # Given two clients in Kyiv Oblast, the second with no phone and reading English
    [uk] = await make_clients(admin_conn, 1, start=200)
    [en] = await make_clients(admin_conn, 1, start=300, phone=False)
    await admin_conn.execute("UPDATE clients SET language = 'en' WHERE id = $1", en)
    saved = await _ok(await client.post("/api/v1/templates", headers=marketer, json=V2), 201)
    path = f"/api/v1/templates/{saved['template']['id']}/versions/1/preview"

    async def preview(**body: object) -> Any:
        return await _ok(await client.post(path, headers=operator, json=body))

    # When the SMS is previewed for the first client
    sms = await preview(client_id=uk, channel="sms")
    # Then it carries their real data, the language used and the cost of that exact text
    text = f"Олена, борг 120,50{NB}грн (Київська область)"
    assert sms["content"] == {"type": "sms", "text": text}
    assert (sms["language"], sms["has_address"], sms["error"]) == ("uk", True, None)
    assert sms["sms"] == msgspec.structs.asdict(SmsCost(*sms_stats(text)))
    # ...in English on request, with the region's English name
    assert (await preview(client_id=uk, channel="sms", language="en"))["content"]["text"] == (
        f"Олена, you owe UAH{NB}120.50 (Kyiv Oblast)"
    )
    # ...in the client's own language without asking, though the client has no phone
    english = await preview(client_id=en, channel="sms")
    assert english["language"] == "en" and english["has_address"] is False
    assert english["content"]["text"].startswith("Олена, you owe")
    # ...and in Ukrainian where the version has no English body (Viber)
    viber = await preview(client_id=en, channel="viber")
    assert viber["language"] == "uk"
    assert viber["content"]["button_url"] == "https://pay.example.ua/0000000300"
    # The e-mail carries the client's signed unsubscribe link; chatbot and IVR render too
    email = await preview(client_id=en, channel="email")
    link = UnsubscribeLinks.from_settings(settings).url(en, "debt")
    assert email["content"]["unsubscribe_url"] == link and link in email["content"]["html"]
    assert (await preview(client_id=uk, channel="chatbot"))["content"]["buttons"][1] == {
        "text": "Оператор",
        "url": None,
    }
    assert (await preview(client_id=uk, channel="ivr"))["content"]["type"] == "ivr"
    # Unknown client, version or template: 404; a bad channel or request: 400 naming the field
    await _bad(
        await client.post(path, headers=operator, json={"client_id": 999_999, "channel": "sms"}),
        "",
        404,
    )
    await _bad(
        await client.post(
            path.replace("/versions/1/", "/versions/9/"),
            headers=operator,
            json={"client_id": uk, "channel": "sms"},
        ),
        "",
        404,
    )
    await _bad(
        await client.post(path, headers=operator, json={"client_id": uk, "channel": "fax"}),
        "channel",
    )
    await _bad(
        await client.post(path, headers=operator, json={"client_id": 0, "channel": "sms"}),
        "client_id",
    )
    await _bad(
        await client.post(
            path, headers=operator, json={"client_id": uk, "channel": "sms", "language": "de"}
        ),
        "language",
    )
    sms_only = await _ok(await client.post("/api/v1/templates", headers=marketer, json=V1), 201)
    await _bad(
        await client.post(
            f"/api/v1/templates/{sms_only['template']['id']}/versions/1/preview",
            headers=operator,
            json={"client_id": uk, "channel": "viber"},
        ),
        "channel",
    )


async def test_preview_reports_a_client_whose_data_does_not_render(
    client, demo_users, admin_conn: asyncpg.Connection
) -> None:
    marketer = await login_as(client, "marketer")
    # Given a client without a billing snapshot and a template doing arithmetic on the debt
    [someone] = await make_clients(admin_conn, 1, start=400)
    await admin_conn.execute("DELETE FROM billing_snapshots WHERE account_id = $1", someone)
    saved = await _ok(
        await client.post(
            "/api/v1/templates",
            headers=marketer,
            json={
                "name": "x",
                "topic": "debt",
                "variants": {"sms": {"text": "{{ (debt * 2)|money }}"}},
            },
        ),
        201,
    )
    # When previewed, Then the preview says which field fails, rather than failing itself
    found = await _ok(
        await client.post(
            f"/api/v1/templates/{saved['template']['id']}/versions/1/preview",
            headers=marketer,
            json={"client_id": someone, "channel": "sms"},
        )
    )
    assert found["content"] is None and found["error"]["field"] == "variants.sms.text"


async def test_the_catalogue_lists_every_variable_the_sender_fills(
    client,
    demo_users,
    settings: Settings,
    admin_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
) -> None:
    # Given a client as the sender loads it
    [someone] = await make_clients(admin_conn, 1, start=500)
    [recipient] = await load_recipients(app_conn, [someone], _organisation(settings))
    # When the catalogue is read
    listed = await _ok(
        await client.get("/api/v1/templates/variables", headers=await login_as(client, "marketer"))
    )
    names = {v["name"] for v in listed}
    # Then it names exactly what the sender fills, plus the unsubscribe link it signs per topic
    # and the case variables a case message carries itself
    # (region_en/tariff_en are the English names the renderer swaps in, not variables)
    assert names == (
        set(recipient.variables) - {"region_en", "tariff_en"} | {"unsubscribe_url"} | CASE_VARIABLES
    )
    # and every variable has an example, printed as a template prints it
    by_name = {v["name"]: v for v in listed}
    assert all(v["example"] and v["printed"] and v["source"] for v in listed)
    assert by_name["debt"]["printed"] == f"1{NB}234,50{NB}грн"
    assert by_name["due_date"]["printed"] == "25.12.2026"
    assert by_name["unsubscribe_url"]["type"] == "url"
