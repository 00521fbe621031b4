"""Search keys (migration 0029, crm/search_words.py): the Python and database twins agree,
triggers keep every client's keys in step with its name and its accounts' addresses, and a
search finds what the keys say only when the words hold exactly (on one account)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import login_as
from test_search import URL, ids, insert_people, operator  # noqa: F401 (a fixture)

from crm.search_words import (
    ADDRESS_TAG,
    NAME_TAG,
    client_search_keys,
    query_keys,
    search_keys,
    search_norm,
)


@pytest.mark.parametrize(
    "text",
    [
        "Іванова-Петренко Ольга Степанівна",
        "м. Одеса вул. Соборна 112/2 53",
        "с. Гай 8А",
        "Мар’яна О'Коннор",
        "  a--b  7 ",
        "",
        "ʼЇжак-Ґанджа 1-2 12345678 абвгдеєж",
    ],
)
@pytest.mark.parametrize("tag", [NAME_TAG, ADDRESS_TAG])
async def test_python_keys_are_the_database_ones(app_conn, text, tag) -> None:
    norm = search_norm(text)
    in_db = await app_conn.fetchval(
        "SELECT herald_search_keys(herald_search_norm($1), $2)", text, tag
    )
    assert in_db == sorted(search_keys(norm, tag))


async def test_a_query_word_has_the_key_of_its_start(app_conn) -> None:
    row = set(search_keys(search_norm("Іванова-Петренко Ольга"), NAME_TAG))
    for word in ("іван", "іванова", "петренко", "ольга", "оль", "іванова-пет"):
        assert set(query_keys(word, NAME_TAG)) <= row, word
    # An abbreviation gives the key of its letters, a long word that of its first 8.
    address = set(search_keys(search_norm("м. Київ вул. Незалежності 8"), ADDRESS_TAG))
    for word in ("вул.", "м.", "м", "8", "незалежності", "київ"):
        assert (
            len(query_keys(word, ADDRESS_TAG)) == 1
            and set(query_keys(word, ADDRESS_TAG)) <= address
        ), word
    assert query_keys("незалежн", ADDRESS_TAG) == query_keys("незалежності", ADDRESS_TAG)
    # Name and address keys differ: "київ" in a name is not "київ" in an address.
    assert not set(query_keys("київ", NAME_TAG)) & set(query_keys("київ", ADDRESS_TAG))


async def _keys_in_step(conn) -> None:
    stale = await conn.fetch(
        "SELECT id FROM clients WHERE search_keys <> herald_client_search_keys(id, name_search)"
    )
    assert stale == []


async def test_triggers_keep_keys_in_step(client, demo_users, admin_conn) -> None:
    await insert_people(admin_conn)
    operator = await login_as(client, "operator_cc")
    await _keys_in_step(admin_conn)
    keys = await admin_conn.fetchval("SELECT search_keys FROM clients WHERE id = 102")
    assert keys == client_search_keys(
        search_norm("Ковальчук Мар’яна Іванівна"),
        [search_norm("м. Львів вул. Івана Франка 10"), search_norm("м. Київ вул. Садова 7 12")],
    )

    # An address edit: the new street is found, the old one is not.
    await admin_conn.execute(
        "UPDATE accounts SET street = 'вул. Яворницького' WHERE or_number = '4000000004'"
    )
    await _keys_in_step(admin_conn)
    assert await ids(client, operator, address="яворн 22") == [104]
    assert await ids(client, operator, address="собор 22") == []
    # An update that leaves the address alone leaves the client row alone.
    before = await admin_conn.fetchval("SELECT xmin::text FROM clients WHERE id = 104")
    await admin_conn.execute(
        "UPDATE accounts SET status = 'suspended' WHERE or_number = '4000000004'"
    )
    assert await admin_conn.fetchval("SELECT xmin::text FROM clients WHERE id = 104") == before

    # An account moved to another client takes its address along.
    await admin_conn.execute("UPDATE accounts SET client_id = 101 WHERE or_number = '4000000004'")
    await _keys_in_step(admin_conn)
    assert await ids(client, operator, address="яворн 22") == [101]
    # Deleted, it is found no more; a renamed client is found by the new name only.
    await admin_conn.execute(
        "DELETE FROM meters WHERE account_id IN "
        "(SELECT id FROM accounts WHERE or_number = '4000000004')"
    )
    await admin_conn.execute("DELETE FROM accounts WHERE or_number = '4000000004'")
    await admin_conn.execute("UPDATE clients SET last_name = 'Гончаренко' WHERE id = 104")
    await _keys_in_step(admin_conn)
    assert await ids(client, operator, address="яворн 22") == []
    assert await ids(client, operator, name="гончар") == [104]
    assert await ids(client, operator, name="бондар") == []
    # Several accounts in one statement.
    await admin_conn.execute("UPDATE accounts SET building = '99' WHERE client_id IN (102, 103)")
    await _keys_in_step(admin_conn)
    assert await ids(client, operator, address="київ 99") == [102, 103]


async def test_address_words_hold_on_one_account(client, operator) -> None:
    # Client 102 has the keys of "львів" (one account) and "садова" (another) ...
    assert await ids(client, operator, address="львів франка") == [102]
    assert await ids(client, operator, address="київ садова") == [102]
    # ... but no one account at both.
    assert await ids(client, operator, address="львів садова") == []
    assert await ids(client, operator, name="ковальчук", address="садова 7") == [102]


async def test_abbreviations_and_short_words_narrow_the_search(client, operator) -> None:
    # "вул." and "с" have keys too (an operator types "вул. с 7" for вул. Садова, 7).
    assert await ids(client, operator, address="вул. с 7") == [102]
    assert await ids(client, operator, address="київ вул. н") == [103]
    assert await ids(client, operator, name="шевченко о") == [103]
    response = await client.get(URL, params={"address": "м. ол"}, headers=operator)
    assert response.status == 400, await response.text()
    assert [e["field"] for e in (await response.json())["errors"]] == ["address"]


async def test_pages_are_topped_up_past_candidates_whose_words_are_on_two_accounts(
    client, demo_users, admin_conn
) -> None:
    # 40 clients have "Львів" on one account and "Садова" on another (their keys hold
    # both), and every tenth also has both on one account: those 4 are the matches.
    people: list[tuple[Any, ...]] = []
    for i in range(40):
        accounts = [
            (
                f"{7000000000 + 2 * i}",
                f"56XG{70000000000 + 2 * i:011d}K",
                "м. Львів",
                "вул. Франка",
                "1",
                None,
            ),
            (
                f"{7000000001 + 2 * i}",
                f"56XG{70000000001 + 2 * i:011d}K",
                "м. Київ",
                "вул. Садова",
                "2",
                None,
            ),
        ]
        if i % 10 == 9:
            accounts[1] = accounts[1][:2] + ("м. Львів", "вул. Садова", "3", None)
        people.append((500 + i, "Тестенко", "Іван", None, accounts, []))
    await insert_people(admin_conn, people)
    operator = await login_as(client, "operator_cc")
    seen, cursor = [], None
    while True:
        params = {"address": "львів садова", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = await (await client.get(URL, params=params, headers=operator)).json()
        seen += [item["client_id"] for item in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == [509, 519, 529, 539]
