"""One pagination style (issue 18, point 5): ``cursor`` in, ``next_cursor`` out.

The id parameters and next-id fields of older lists still work, documented deprecated.
"""

from __future__ import annotations

from typing import Any

from conftest import login_as

OLD_PARAMS = {"after_id", "before_id", "after_client_id", "before_version"}
# Lists that answer a bare JSON array have no page object to carry next_cursor: the
# caller passes the last item's id. Changing that is a new version of the route.
BARE_LISTS = {"/api/v1/case-escalations"}


async def _walk(client: Any, headers: dict[str, str], path: str, param: str | None) -> list[int]:
    """Every id of a list, one item a page, following ``next_cursor`` or the old field."""
    seen: list[int] = []
    params: dict[str, str] = {"limit": "1"}
    while True:
        response = await client.get(path, params=params, headers=headers)
        assert response.status == 200, await response.text()
        page = await response.json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            assert page["next_after_id"] is None
            return seen
        assert page["next_after_id"] == seen[-1]
        params = {"limit": "1"} | (
            {param: str(page["next_after_id"])} if param else {"cursor": page["next_cursor"]}
        )


async def test_the_cursor_and_the_deprecated_id_walk_the_same_pages(client, demo_users) -> None:
    # Given the demo users, when the user list is walked a user at a time by cursor and
    # by the deprecated after_id, then both see every user once, in the same order.
    admin = await login_as(client, "admin")
    by_cursor = await _walk(client, admin, "/api/v1/users", None)
    by_id = await _walk(client, admin, "/api/v1/users", "after_id")
    assert by_cursor == by_id == sorted(set(by_cursor)) and len(by_cursor) >= len(demo_users)
    # A cursor that is not one is a 400 naming it
    bad = await client.get("/api/v1/users", params={"cursor": "nonsense"}, headers=admin)
    assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "cursor"


async def test_the_document_marks_the_old_style_deprecated(client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    old_lists = 0
    for path, methods in doc["paths"].items():
        for op in methods.values():
            params = {p["name"]: p for p in op.get("parameters", [])}
            for name in OLD_PARAMS & params.keys() if path not in BARE_LISTS else ():
                old_lists += 1
                assert params[name].get("deprecated") is True, (path, name)
                assert "cursor" in params, (path, "no cursor parameter")
    assert old_lists >= 10
    for name, schema in schemas.items():
        for field, prop in schema.get("properties", {}).items():
            if (
                field.startswith("next_")
                and field != "next_cursor"
                and (field.endswith("_id") or field.endswith("_version"))
            ):
                assert prop.get("deprecated") is True, (name, field)
                assert "next_cursor" in schema["properties"], name
