"""The web UI over HTTP: login and lock-out, CSRF, security headers, menus by role,
escaping, the search and card pages, contacts, the language switch."""

from __future__ import annotations

import gzip
import re

from test_card import make_client
from ui_helpers import demo, origin, post_form, ui_login

from admin_api.ui import menu
from admin_api.ui.guard import CSP


async def test_a_page_without_a_session_sends_to_login_and_back(client, demo_users) -> None:
    response = await client.get("/ui/search?q=1", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/ui/login?next=/ui/search%3Fq%3D1"
    # htmx fragment: HX-Redirect to the login, back to the page the person was on
    fragment = await client.get(
        "/ui/search/results?q=1",
        allow_redirects=False,
        headers={"HX-Request": "true", "HX-Current-URL": origin(client) + "/ui/search"},
    )
    assert fragment.headers["HX-Redirect"] == "/ui/login?next=/ui/search"
    user = demo("operator_cc")
    login = await client.post(
        "/ui/login",
        allow_redirects=False,
        data={"login": user.login, "password": user.password, "next": "/ui/search?q=1"},
        headers={"Origin": origin(client)},
    )
    assert login.status == 303 and login.headers["Location"] == "/ui/search?q=1"
    cookie = login.cookies["herald_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_login_errors_and_lock_out_are_shown_in_the_language(client, demo_users) -> None:
    user = demo("analyst")
    for _ in range(4):
        wrong = await client.post(
            "/ui/login",
            data={"login": user.login, "password": "nope"},
            headers={"Origin": origin(client)},
        )
        assert wrong.status == 401
        assert "Неправильний логін або пароль." in await wrong.text()
    locked = await client.post(
        "/ui/login",
        data={"login": user.login, "password": "nope"},
        headers={"Origin": origin(client)},
    )
    text = await locked.text()
    assert locked.status == 423 and "обліковий запис заблоковано до" in text, text
    # never a redirect to another site after login
    good = await client.post(
        "/ui/login",
        data={"login": "admin", "password": demo("admin").password, "next": "//evil.example/"},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert good.headers["Location"] == "/ui/search"
    # The address that keeps failing (any login) must wait, and is told for how long
    for _ in range(12):
        throttled = await client.post(
            "/ui/login",
            data={"login": "nobody", "password": "x"},
            headers={"Origin": origin(client)},
        )
        if throttled.status == 429:
            break
        assert throttled.status == 401
    assert throttled.status == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert "Забагато невдалих спроб з цього комп’ютера" in await throttled.text()


async def test_csrf_needs_own_origin_and_the_session_token(client, demo_users) -> None:
    user = demo("operator_cc")
    foreign = await client.post(
        "/ui/login",
        data={"login": user.login, "password": user.password},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status == 403
    no_origin = await client.post(
        "/ui/login", data={"login": user.login, "password": user.password}
    )
    assert no_origin.status == 403
    token = await ui_login(client, "operator_cc")
    # a state-changing page request without the token, or with another one, is refused
    missing = await client.post(
        "/ui/language",
        data={"language": "en"},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert missing.status == 403
    forged = await post_form(
        client, "/ui/language", {"language": "en"}, "0" * 40, allow_redirects=False
    )
    assert forged.status == 403
    # the JSON API with the cookie: another site's Origin is refused too
    api = await client.post("/api/v1/auth/logout", headers={"Origin": "https://evil.example"})
    assert api.status == 403
    ok = await post_form(client, "/ui/language", {"language": "en"}, token, allow_redirects=False)
    assert ok.status == 303


async def test_security_headers_on_pages_static_and_api(client, demo_users) -> None:
    for path in ("/ui/login", "/ui/static/herald.js", "/healthz"):
        response = await client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    page = await (await client.get("/ui/login")).text()
    # no inline script and no inline event handler anywhere
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert not re.search(r"\son[a-z]+=", page)


async def test_static_files_go_gzipped_to_browsers_that_accept_it(client) -> None:
    plain = await client.get("/ui/static/htmx.min.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    body = await plain.read()
    packed = await client.get(
        "/ui/static/htmx.min.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    raw = await packed.read()
    assert len(raw) < len(body) / 2 and gzip.decompress(raw) == body


ROLES = ("operator_cc", "operator_cos", "supervisor", "marketer", "analyst", "admin")


async def test_each_role_sees_its_menu_and_is_refused_the_rest(client, demo_users) -> None:
    menus = {}
    for role in ROLES:
        await ui_login(client, role)
        me = await (await client.get("/api/v1/auth/me")).json()
        page = await (await client.get("/ui/account")).text()
        shown = set(re.findall(r'data-menu="([a-z-]+)"', page))
        expected = {i.key for i in menu.ITEMS if i.permission in me["permissions"]}
        assert shown == expected and shown, role
        menus[role] = shown
        for item in menu.ITEMS:
            response = await client.get(item.href, allow_redirects=False)
            assert (response.status == 200) == (item.key in expected), (role, item.href)
            if item.key not in expected:
                assert response.status == 403
                assert "Доступ заборонено" in await response.text()
    # the demo's point: different roles, different menus
    assert menus["marketer"] == {
        "campaigns",
        "triggers",
        "templates",
        "segments",
        "stop-lists",
        "contact-rules",
        "reports",
        "dashboards",
    }
    assert "supervisor" in menus["supervisor"] and "supervisor" not in menus["operator_cc"]


def test_a_long_menu_folds_each_workspace_into_a_drop_down() -> None:
    everything = {i.permission for i in menu.ITEMS}
    bar = menu.top_bar(everything, "/ui/audit")
    assert len(bar) <= menu.FLAT_LIMIT
    groups = {e.key: e for e in bar if isinstance(e, menu.MenuGroup)}
    assert set(groups) == {"marketing", "analytics", "admin"}
    assert groups["admin"].active and not groups["marketing"].active
    assert [i.key for i in groups["admin"].items if i.active] == ["audit"]
    # every entry is still reachable, once
    keys = [i.key for e in bar for i in (e.items if isinstance(e, menu.MenuGroup) else (e,))]
    assert sorted(keys) == sorted(i.key for i in menu.ITEMS)
    # a marketer's few entries stay flat
    marketer = {"campaigns.read", "templates.read", "segments.read", "reports.own"}
    assert all(isinstance(e, menu.MenuItem) for e in menu.top_bar(marketer, "/ui/campaigns"))


async def test_client_data_renders_inert(client, demo_users, admin_conn) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000201",))
    await admin_conn.execute(
        "UPDATE clients SET last_name = '<script>alert(1)</script>' WHERE id = $1", client_id
    )
    await ui_login(client, "operator_cc")
    text = await (await client.get(f"/ui/clients/{client_id}")).text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    found = await (await client.get(f"/ui/search/results?q={client_id}")).text()
    assert "&lt;script&gt;" in found and "<script>alert" not in found


async def test_search_and_card_pages(client, demo_users, admin_conn) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000301", "1000000302"))
    await ui_login(client, "operator_cc")
    for query in (
        "q=1000000301",
        "q=0501112233",
        "q=шевч",
        "name=тарас&address=ірпінь",
        f"client_id={client_id}&phone=999999999&match=any",
    ):
        text = await (await client.get(f"/ui/search/results?{query}")).text()
        assert f'data-client="{client_id}"' in text, query
    none = await (await client.get("/ui/search/results?name=ніхто&address=ірпінь")).text()
    assert 'id="no-results"' in none
    card = await (await client.get(f"/ui/clients/{client_id}")).text()
    assert "Шевченко Тарас Григорович" in card
    assert "1000000302" in card and "Зруйноване житло" in card
    assert "замасковано" in card  # operator_cc sees passport and tax id masked
    timeline = await client.get(f"/ui/clients/{client_id}/timeline")
    assert timeline.status == 200
    missing = await client.get("/ui/clients/999999")
    assert missing.status == 404 and "Не знайдено" in await missing.text()


async def test_contact_edit_is_journalled_and_shown(client, demo_users, admin_conn) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000401",))
    contact_id = await admin_conn.fetchval(
        "SELECT id FROM contacts WHERE client_id = $1", client_id
    )
    token = await ui_login(client, "supervisor")
    response = await post_form(
        client,
        f"/ui/clients/{client_id}/contacts/{contact_id}",
        {
            "phone": "067 555 44 33",
            "email": "taras@example.com",
            "first_name": "Тарас",
            "last_name": "Шевченко",
        },
        token,
    )
    text = await response.text()
    assert response.status == 200 and "+380675554433" in text
    assert response.headers["HX-Trigger"] == "herald:history"
    history = await (await client.get(f"/ui/clients/{client_id}/history")).text()
    assert 'data-field="phone"' in history and "+380675554433" in history
    # a second contact with the same phone: the duplicate warning with the candidate
    dup = await post_form(
        client,
        f"/ui/clients/{client_id}/contacts",
        {"first_name": "Інна", "phone": "+380675554433"},
        token,
    )
    assert 'id="duplicate-warning"' in await dup.text()


async def test_language_switch_is_stored_per_user(client, demo_users) -> None:
    token = await ui_login(client, "operator_cos")
    assert "Пошук клієнтів" in await (await client.get("/ui/search")).text()
    await post_form(client, "/ui/language", {"language": "en", "next": "/ui/search"}, token)
    assert "Client search" in await (await client.get("/ui/search")).text()
    # stored for the user: a new login (another browser) keeps English
    client.session.cookie_jar.clear()
    await ui_login(client, "operator_cos")
    assert "Client search" in await (await client.get("/ui/search")).text()


async def _sse_event(response) -> tuple[str, str]:
    """The next event of a text/event-stream (comments skipped)."""
    import asyncio

    async def read() -> tuple[str, str]:
        event, data = "message", list[str]()
        while True:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if line == "" and data:
                return event, "\n".join(data)
            key, _, value = line.partition(":")
            if key == "event":
                event = value.strip()
            elif key == "data":
                data.append(value.removeprefix(" "))

    return await asyncio.wait_for(read(), 30)


async def test_one_stream_carries_calls_and_case_changes(client, demo_users, admin_conn) -> None:
    from conftest import login_as

    client_id, _ = await make_client(admin_conn, ("1000000601",))
    integration = await login_as(client, "integration")
    await ui_login(client, "operator_cc")
    stream = await client.get("/ui/live")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert await _sse_event(stream) == ("ready", "ready")
    # VICIdial rings this operator: the call panel arrives as HTML, the card link in it
    await client.post(
        "/api/v1/cti/calls",
        headers=integration,
        json={
            "event": "ringing",
            "call_id": "V3000000001",
            "phone_number": "0501112233",
            "user": "operator.cc",
        },
    )
    event, html = await _sse_event(stream)
    assert event == "call" and f'href="/ui/clients/{client_id}?call=' in html
    assert "Шевченко Тарас Григорович" in html
    # the call ends: it becomes a case, and the same stream says that case changed
    await client.post(
        "/api/v1/cti/calls",
        headers=integration,
        json={
            "event": "hung_up",
            "call_id": "V3000000001",
            "phone_number": "0501112233",
            "user": "operator.cc",
        },
    )
    seen, panel = "", ""
    while not (seen and panel):
        event, data = await _sse_event(stream)
        if event == "case":
            seen = data
        elif event == "call":
            panel = data
    case_id, number = await admin_conn.fetchrow(
        "SELECT id, number FROM cases WHERE client_id = $1", client_id
    )
    assert str(case_id) in seen.split()
    # the ended call's panel links to that very case
    assert f'<a href="/ui/cases/{case_id}" class="mono" id="call-case-link"' in panel
    assert number in panel and 'data-event="hung_up"' in panel
    stream.close()


async def test_mass_edit_of_ticked_accounts_previews_then_applies(
    client, demo_users, admin_conn
) -> None:
    _, accounts = await make_client(admin_conn, ("1000000701", "1000000702"))
    token = await ui_login(client, "operator_cc")
    refused = await post_form(
        client,
        "/ui/accounts/mass-edit",
        {"account_ids": str(accounts[0]), "status": "suspended"},
        token,
    )
    assert refused.status == 403  # operators may not mass-edit
    token = await ui_login(client, "supervisor")
    page = await (await client.get("/ui/search?q=1000000701")).text()
    assert f'name="account_ids" value="{accounts[0]}"' in page and 'id="mass-edit"' in page
    form = [("account_ids", str(a)) for a in accounts] + [
        ("registers_add", "idp"),
        ("apply", "false"),
    ]
    preview = await client.post(
        "/ui/accounts/mass-edit",
        data=form,
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    text = await preview.text()
    assert 'data-dry-run="true"' in text and "2 рахунки" in text, text
    assert (
        await admin_conn.fetchval("SELECT count(*) FROM accounts WHERE 'idp' = ANY(registers)") == 0
    )
    form[-1] = ("apply", "true")
    applied = await client.post(
        "/ui/accounts/mass-edit",
        data=form,
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert 'data-dry-run="false"' in await applied.text()
    assert (
        await admin_conn.fetchval("SELECT count(*) FROM accounts WHERE 'idp' = ANY(registers)") == 2
    )


async def test_history_masks_passports_without_pii(client, demo_users, admin_conn) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000801",))
    contact_id = await admin_conn.fetchval(
        "SELECT id FROM contacts WHERE client_id = $1", client_id
    )
    token = await ui_login(client, "operator_cos")  # has clients.pii
    await post_form(
        client,
        f"/ui/clients/{client_id}/contacts/{contact_id}",
        {
            "first_name": "Тарас",
            "last_name": "Шевченко",
            "phone": "+380501112233",
            "email": "taras@example.com",
        },
        token,
    )
    await admin_conn.execute(
        "INSERT INTO audit_log (actor_login, action, entity_type, entity_id, "
        "field, old_value, new_value) VALUES ('t', 'update', 'contact', $1, "
        "'passport_number', NULL, '\"КА654321\"')",
        str(contact_id),
    )
    assert "КА654321" in await (await client.get(f"/ui/clients/{client_id}/history")).text()
    # the client record's own history: the same for roles without audit.read
    await admin_conn.execute(
        "INSERT INTO audit_log (actor_login, action, entity_type, entity_id, "
        "field, old_value, new_value) VALUES ('t', 'update', 'client', $1, "
        "'tax_id', '\"1234567890\"', '\"2234567891\"')",
        str(client_id),
    )
    await admin_conn.execute(
        "INSERT INTO audit_log (actor_login, action, entity_type, entity_id, "
        "field, old_value, new_value) VALUES ('t', 'update', 'client', $1, "
        "'tax_id', NULL, '\"9999999999\"')",
        str(client_id + 1),
    )
    shown = await (await client.get(f"/ui/clients/{client_id}/history")).text()
    assert "2234567891" in shown and 'id="history-masked"' not in shown
    await ui_login(client, "operator_cc")  # no clients.pii, no audit.read
    shown = await (await client.get(f"/ui/clients/{client_id}/history")).text()
    assert "КА654321" not in shown and "КА****21" in shown
    assert 'data-entity="client"' in shown and "2234567891" not in shown
    assert 'id="history-masked"' in shown  # the page says what it hides
    assert "9999999999" not in shown and "99****99" not in shown  # another client's record


def test_every_form_of_the_pages_states_its_integers_bounds() -> None:
    """A page's form lands in the same columns as the API's bodies: the same bounds."""
    import importlib
    import pkgutil

    import msgspec

    import admin_api.ui
    from admin_api.inputs import unbounded_integers

    forms = {
        cls
        for info in pkgutil.iter_modules(admin_api.ui.__path__)
        for cls in vars(importlib.import_module(f"admin_api.ui.{info.name}")).values()
        if isinstance(cls, type)
        and issubclass(cls, msgspec.Struct)
        and cls.__name__.endswith("Form")
    }
    assert len(forms) >= 10
    assert [
        path
        for form in sorted(forms, key=lambda c: c.__name__)
        for path in unbounded_integers(form)
    ] == []


async def test_a_nul_or_a_broken_form_is_a_400_naming_the_field(client, demo_users) -> None:
    token = await ui_login(client, "operator_cc")
    response = await post_form(
        client, "/ui/language", {"language": "e\x00n"}, token, allow_redirects=False
    )
    assert response.status == 400
    assert "NUL" in await response.text()
