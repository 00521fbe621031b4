"""Client search (issue 4, point 7): every criterion, phone formats, name variants, AND/OR,
keyset pages, the count, and bad input."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import login_as

from crm import search
from crm.search import (
    COUNT_CAP,
    WALK_IDS,
    decode_cursor,
    encode_cursor,
    parse_phone,
    search_norm,
    starts_a_word,
    word_start_pattern,
)

URL = "/api/v1/clients/search"

# (client id, last, first, middle, [(OR, EIC, city, street, building, flat)], [phones])
PEOPLE = [
    (
        101,
        "Шевченко",
        "Тарас",
        "Григорович",
        [("1000000001", "56XG00000000001K", "м. Київ", "вул. Шевченка", "1", "5")],
        ["+380671234567"],
    ),
    (
        102,
        "Ковальчук",
        "Мар’яна",
        "Іванівна",
        [
            ("1000000002", "56XG00000000002K", "м. Львів", "вул. Івана Франка", "10", None),
            ("2000000002", "56XG00000000003K", "м. Київ", "вул. Садова", "7", "12"),
        ],
        ["+380501112233"],
    ),
    (
        103,
        "Шевченко",
        "Оксана",
        None,
        [("3000000003", "56XG00000000004K", "м. Київ", "вул. Незалежності", "3", None)],
        ["+380661234567"],
    ),
    (
        104,
        "Бондар",
        "Іван",
        "Петрович",
        [("4000000004", "56XG00000000005K", "м. Одеса", "вул. Соборна", "22", "1")],
        [],
    ),
]


async def insert_people(conn: asyncpg.Connection, people=PEOPLE) -> None:
    for client_id, last, first, middle, accounts, phones in people:
        await conn.execute(
            "INSERT INTO clients (id, last_name, first_name, middle_name) VALUES ($1, $2, $3, $4)",
            client_id,
            last,
            first,
            middle,
        )
        for or_number, eic, city, street, building, flat in accounts:
            await conn.execute(
                "INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, "
                "building, flat, consumer_type, tariff_code, opened_at) VALUES "
                "($1, $2, $3, 'UA-30', $4, $5, $6, $7, 'household', 'household_fixed', '2020-01-01')",
                client_id,
                or_number,
                eic,
                city,
                street,
                building,
                flat,
            )
        for phone in phones:
            await conn.execute(
                "INSERT INTO contacts (client_id, last_name, first_name, phone) "
                "VALUES ($1, $2, $3, $4)",
                client_id,
                last,
                first,
                phone,
            )


async def ids(client, headers, **params) -> list[int]:
    response = await client.get(URL, params=params, headers=headers)
    assert response.status == 200, await response.text()
    return [item["client_id"] for item in (await response.json())["items"]]


@pytest.fixture
async def operator(client, demo_users, admin_conn):
    await insert_people(admin_conn)
    return await login_as(client, "operator_cc")


@pytest.mark.parametrize(
    "typed",
    [
        "067 123 45 67",
        "+380671234567",
        "0671234567",
        "(067) 123-45-67",
        "380671234567",
        "+38 067 123 45 67",
    ],
)
async def test_full_phone_in_any_format_finds_the_owner(client, operator, typed) -> None:
    assert await ids(client, operator, phone=typed) == [101]


async def test_partial_phone_last_digits_and_number_start(client, operator) -> None:
    # The last seven digits are shared by 101 (067...) and 103 (066...).
    assert await ids(client, operator, phone="1234567") == [101, 103]
    assert await ids(client, operator, phone="234567") == [101, 103]
    # The start of a number: only the 067 one.
    assert await ids(client, operator, phone="067123") == [101]
    assert await ids(client, operator, phone="+38066") == [103]
    assert await ids(client, operator, phone="9999999") == []


async def test_last_digits_starting_with_zero_are_read_both_ways(
    client, operator, admin_conn
) -> None:
    """Issue 20 point 6: the client reads out the end of the number, "0792424"; it could
    also be the start of a national number (079 24 24...): both readings are searched."""
    await insert_people(
        admin_conn,
        [
            (
                301,
                "Мельник",
                "Ігор",
                None,
                [("7000000007", "56XG00000000008K", "м. Київ", "вул. Лісова", "4", None)],
                ["+380630792424"],
            ),
            (
                302,
                "Ткаченко",
                "Ніна",
                None,
                [("8000000008", "56XG00000000009K", "м. Київ", "вул. Лісова", "5", None)],
                ["+380792424111"],
            ),
        ],
    )
    assert await ids(client, operator, phone="792424") == [301]
    assert await ids(client, operator, phone="0792424") == [301, 302]
    assert await ids(client, operator, phone="079 24 24") == [301, 302]
    # Combined with another criterion, and with match=any
    assert await ids(client, operator, phone="0792424", name="мельник") == [301]
    assert await ids(client, operator, phone="0792424", name="бондар", match="any") == [
        104,
        301,
        302,
    ]


def test_phone_kinds() -> None:
    assert parse_phone("067 123 45 67").kind == "exact"
    assert parse_phone("1234567").kind == "suffix"
    assert parse_phone("067 12").digits == "3806712"
    assert parse_phone("067 12").suffix == "06712"
    assert parse_phone("+38 067 12").suffix is None
    assert parse_phone("1234567").suffix is None


async def test_or_full_and_prefix_client_id_and_eic(client, operator) -> None:
    assert await ids(client, operator, **{"or": "1000000002"}) == [102]
    assert await ids(client, operator, **{"or": "100000000"}) == [101, 102]
    assert await ids(client, operator, client_id="103") == [103]
    assert await ids(client, operator, eic="56xg00000000005k") == [104]
    response = await client.get(URL, params={"or": "2000000002"}, headers=operator)
    item = (await response.json())["items"][0]
    # Both accounts of the client are listed; the one that matched is marked.
    assert [(a["or_number"], a["matched"]) for a in item["accounts"]] == [
        ("1000000002", False),
        ("2000000002", True),
    ]
    assert item["phones"] == ["+380501112233"]
    assert item["full_name"] == "Ковальчук Мар’яна Іванівна"


async def test_partial_address_any_case(client, operator) -> None:
    assert await ids(client, operator, address="київ") == [101, 102, 103]
    assert await ids(client, operator, address="КИЇВ  садова") == [102]
    assert await ids(client, operator, address="Франка 10") == [102]
    assert await ids(client, operator, address="Харків") == []


@pytest.mark.parametrize(
    "typed",
    ["мар'яна", "МАРʼЯНА", "Мар`яна", "мар’яна ковальчук", "  ковальчук    Мар’яна ", "ковальч"],
)
async def test_partial_name_ignores_case_apostrophes_and_spacing(client, operator, typed) -> None:
    assert await ids(client, operator, name=typed) == [102]


async def test_name_matches_several(client, operator) -> None:
    assert await ids(client, operator, name="шевч") == [101, 103]
    assert await ids(client, operator, name="шевченко тарас") == [101]


async def test_words_match_from_their_start(client, operator, admin_conn) -> None:
    await insert_people(
        admin_conn,
        [
            (
                201,
                "Іванова-Петренко",
                "Ольга",
                None,
                [("5000000005", "56XG00000000006K", "м. Одеса", "вул. Соборна", "112/2", "53")],
                [],
            ),
            (
                202,
                "Запетренко",
                "Олег",
                None,
                [("6000000006", "56XG00000000007K", "м. Одеса", "вул. Соборна", "53А", None)],
                [],
            ),
        ],
    )
    # A word starts after a space or a hyphen, never inside a word.
    assert await ids(client, operator, name="петренко") == [201]
    assert await ids(client, operator, name="запетр") == [202]
    assert await ids(client, operator, name="етренко") == []
    # A building or flat number matches from its start: 53 finds 53 and 53А, 1 finds 1
    # and 112/2, 12 finds neither 112/2 nor 22.
    assert await ids(client, operator, address="соборна 53") == [201, 202]
    assert await ids(client, operator, address="одеса 1") == [104, 201]
    assert await ids(client, operator, address="одеса 12") == []
    assert await ids(client, operator, address="м. 112/2") == [201]
    response = await client.get(URL, params={"address": "одеса 53а"}, headers=operator)
    (item,) = (await response.json())["items"]
    assert item["client_id"] == 202 and item["accounts"][0]["matched"] is True


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("м. одеса вул. соборна 112/2 53", "112/2"),
        ("м. одеса вул. соборна 112/2 53", "12"),
        ("іванова-петренко ольга", "петр"),
        ("запетренко олег", "петр"),
        ("вул. 3/1", "3/1"),
        ("a.b (c) [d] x+y", "(c)"),
        ("a.b (c) [d] x+y", "[d]"),
        ("a.b (c) [d] x+y", "x+y"),
        ("a.b (c) [d] x+y", ".b"),
        ("шевченко", "шев"),
        ("шевченко", "вченко"),
    ],
)
async def test_database_word_start_agrees(app_conn, text, word) -> None:
    assert await app_conn.fetchval(
        "SELECT $1 ~ $2", text, word_start_pattern(word)
    ) == starts_a_word(word, text)


def test_python_normalisation_is_the_database_one() -> None:
    assert search_norm("  Мар’яна   КОВАЛЬЧУК ") == "маряна ковальчук"


async def test_database_normalisation_agrees(app_conn) -> None:
    for text in ["  Мар’яна   КОВАЛЬЧУК ", "О'Коннор ʼЇжак`", "ҐАНДЖА  Євген"]:
        assert await app_conn.fetchval("SELECT herald_search_norm($1)", text) == search_norm(text)


async def test_all_versus_any(client, operator) -> None:
    assert await ids(client, operator, name="шевченко", address="київ") == [101, 103]
    assert await ids(client, operator, name="шевченко", address="львів") == []
    assert await ids(client, operator, name="шевченко", address="львів", match="any") == [
        101,
        102,
        103,
    ]
    assert await ids(client, operator, phone="1234567", name="оксана") == [103]
    assert await ids(client, operator, phone="1234567", name="бондар", match="any") == [
        101,
        103,
        104,
    ]
    # Account criteria under "all" hold on the same account: 102's Kyiv account is not 1000000002.
    assert await ids(client, operator, **{"or": "1000000002"}, address="київ") == []
    assert await ids(client, operator, **{"or": "2000000002"}, address="київ") == [102]
    assert await ids(client, operator, client_id="104", name="бондар") == [104]
    assert await ids(client, operator, client_id="104", name="шевченко") == []


async def test_keyset_pages_have_no_repeats_or_gaps(client, operator, admin_conn) -> None:
    await admin_conn.execute(
        "INSERT INTO clients (id, last_name, first_name) "
        "SELECT 1000 + g, 'Тестенко', 'Ім’я' || g FROM generate_series(1, 23) g"
    )
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"name": "тестенко", "limit": "5"} | ({"cursor": cursor} if cursor else {})
        response = await client.get(URL, params=params, headers=operator)
        body = await response.json()
        assert response.status == 200, body
        assert body["estimated_count"] == 23 and body["count_is_exact"] is True
        seen += [i["client_id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == list(range(1001, 1024))


@pytest.mark.parametrize(
    ("surname", "near", "walk_us"),
    [
        # Walked: the first ids are walked in order, the matches beyond come from the index.
        ("Густенко", [4000, 4500, 4900], 0.0),
        # Collected from the GIN index and sorted.
        ("Рідкісенко", [4900], 1e9),
    ],
)
async def test_matches_beyond_the_walked_ids_are_found_in_order(
    client, operator, admin_conn, monkeypatch, surname, near, walk_us
) -> None:
    monkeypatch.setattr(search, "WALK_US", walk_us)
    far = [WALK_IDS + 25_000, WALK_IDS + 9_000, 3 * WALK_IDS + 7]
    await admin_conn.execute(
        "INSERT INTO clients (id, last_name, first_name) SELECT g, $1, 'Олена' FROM unnest($2::bigint[]) g",
        surname,
        near + far,
    )
    expected = sorted(near + far)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"name": f"{surname[:6]} оле", "limit": "5"} | (
            {"cursor": cursor} if cursor else {}
        )
        body = await (await client.get(URL, params=params, headers=operator)).json()
        assert body["estimated_count"] == len(expected) and body["count_is_exact"] is True
        seen += [i["client_id"] for i in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == expected


async def test_keyset_pages_with_any(client, operator, admin_conn) -> None:
    await admin_conn.execute(
        "INSERT INTO clients (id, last_name, first_name) "
        "SELECT 2000 + g, CASE WHEN g % 2 = 0 THEN 'Парненко' ELSE 'Непарненко' END, 'Ім’я' "
        "FROM generate_series(1, 15) g"
    )
    seen: list[int] = []
    cursor = None
    while True:
        params = {"name": "непарненко", "client_id": "2004", "match": "any", "limit": "3"}
        response = await client.get(
            URL, params=params | ({"cursor": cursor} if cursor else {}), headers=operator
        )
        body = await response.json()
        assert body["estimated_count"] == 9 and body["count_is_exact"] is True
        seen += [i["client_id"] for i in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == [2001, 2003, 2004, 2005, 2007, 2009, 2011, 2013, 2015]


async def test_count_is_exact_when_small_and_an_estimate_above_the_cap(
    client, operator, admin_conn
) -> None:
    response = await client.get(URL, params={"name": "шевченко"}, headers=operator)
    body = await response.json()
    assert (body["estimated_count"], body["count_is_exact"]) == (2, True)
    many = COUNT_CAP + 500
    await admin_conn.execute(
        "INSERT INTO clients (id, last_name, first_name) "
        "SELECT 10000 + g, 'Поширенко', 'Ім’я' FROM generate_series(1, $1::int) g",
        many,
    )
    await admin_conn.execute("ANALYZE clients")
    response = await client.get(URL, params={"name": "поширенко", "limit": "10"}, headers=operator)
    body = await response.json()
    assert response.status == 200, body
    assert body["count_is_exact"] is False
    assert body["estimated_count"] > COUNT_CAP
    assert [i["client_id"] for i in body["items"]] == list(range(10001, 10011))
    assert body["next_cursor"] is not None


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(123456789)) == 123456789


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "query"),
        ({"phone": ""}, "phone"),
        ({"phone": "12"}, "phone"),
        ({"phone": "067-abc"}, "phone"),
        ({"name": "ab"}, "name"),
        ({"name": "   "}, "name"),
        ({"address": "''"}, "address"),
        ({"or": "12"}, "or"),
        ({"or": "12345678901"}, "or"),
        ({"eic": "XYZ"}, "eic"),
        ({"client_id": "0"}, "client_id"),
        ({"client_id": "abc"}, "client_id"),
        ({"name": "шевченко", "limit": "0"}, "limit"),
        ({"name": "шевченко", "limit": "1000"}, "limit"),
        ({"name": "шевченко", "limit": "ten"}, "limit"),
        ({"name": "шевченко", "match": "maybe"}, "match"),
        ({"name": "шевченко", "cursor": "not-a-cursor"}, "cursor"),
        ({"name": "шевченко", "cursor": "%%%"}, "cursor"),
        ({"name": "шевченко", "surname": "x"}, "surname"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(client, operator, params, field) -> None:
    response = await client.get(URL, params=params, headers=operator)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert [e["field"] for e in body["errors"]] == [field]


async def test_needs_clients_read(client, demo_users) -> None:
    assert (await client.get(URL, params={"name": "шевченко"})).status == 401
    headers = await login_as(client, "integration")
    assert (await client.get(URL, params={"name": "шевченко"}, headers=headers)).status == 403
