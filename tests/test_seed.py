"""The synthetic-data seeder: formats, determinism, schema safety, refusal and reset."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from herald.cli.seed import SeedError, SeedReport, generate, load, seed_crm
from herald.cli.seed.codes import (
    TAX_EPOCH,
    Permutation,
    eic_check_char,
    eic_code,
    tax_id_valid,
)
from herald.cli.seed.generate import (
    TABLES,
    Reference,
    chunk_sizes,
    generate_chunk,
    plan_chunks,
)
from herald.cli.seed.names import feminine_surname, transliterate
from herald.settings import Settings

_PHONE = re.compile(r"^\+380(50|66|95|99|67|68|96|97|98|63|73|93)[0-9]{7}$")
_PASSPORT = re.compile(r"^([А-ЯІЇЄҐ]{2} ?[0-9]{6}|[0-9]{9})$")
_REFERENCE = Reference(
    regions=("UA-05", "UA-30", "UA-32", "UA-43", "UA-63"),
    tariffs=(("household_fixed", 7.96), ("condominium", 9.4)),
    topics=("billing", "debt", "marketing"),
)

_SCHEMA = """
SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || '.' || conname || ': ' || pg_get_constraintdef(oid)
       || CASE WHEN convalidated THEN '' ELSE ' (not validated)' END
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || tgname || ': ' || tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1
"""


async def _schema(conn: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await conn.fetch(_SCHEMA)]


async def _digest(conn: asyncpg.Connection) -> dict[str, str]:
    """md5 of each seeded table's rows in a fixed order (all columns, generated ones too)."""
    return {
        t: await conn.fetchval(
            f"SELECT md5(string_agg(x::text, E'\\n' ORDER BY x::text)) FROM {t} x"
        )
        for t in TABLES
    }


async def _seed(settings: Settings, clients: int, **kwargs: Any) -> SeedReport:
    kwargs.setdefault("processes", 1)
    return await seed_crm(settings, clients=clients, progress=False, **kwargs)


# -- pure parts ---------------------------------------------------------------------------


def test_eic_check_character_matches_published_codes() -> None:
    assert eic_check_char("21Z000000000163") == "R"
    assert eic_check_char("22XWATTPLUS----") == "G"
    assert eic_check_char("10YTR-TEIAS----") == "W"
    codes = {eic_code(n) for n in range(5000)}
    assert len(codes) == 5000
    assert all(c[15] == eic_check_char(c) and c[15] != "-" and c.startswith("56X") for c in codes)


def test_permutation_is_a_bijection() -> None:
    perm = Permutation(37, 101, key=7)
    assert sorted(perm(x) for x in range(37 * 101)) == list(range(37 * 101))


def test_names_helpers() -> None:
    assert feminine_surname("Ковальський") == "Ковальська"
    assert feminine_surname("Іванов") == "Іванова"
    assert feminine_surname("Шевченко") == "Шевченко"
    assert feminine_surname("Мельник") == "Мельник"
    assert transliterate("Мар'яна") == "mariana"
    assert transliterate("Юрій") == "yurii"
    assert transliterate("Згурський") == "zghurskyi"


def test_chunk_plan_ids_are_contiguous_and_generation_repeatable() -> None:
    tasks = plan_chunks(2500, 3, _REFERENCE, chunk_clients=1000)
    assert [t.clients for t in tasks] == [1000, 1000, 500]
    for before, after in itertools.pairwise(tasks):
        sizes = chunk_sizes(before.clients)
        assert after.first_account == before.first_account + sizes.accounts
        assert after.first_contact == before.first_contact + sizes.contacts
        assert after.first_meter == before.first_meter + sizes.meters
    first, again = generate_chunk(tasks[2]), generate_chunk(tasks[2])
    assert first.data == again.data
    assert first.rows["accounts"] == chunk_sizes(500).accounts
    assert first.rows["contacts"] == chunk_sizes(500).contacts
    assert first.rows["meters"] == chunk_sizes(500).meters
    assert b"UA-43" not in first.data["accounts"]  # Crimea is in the table, never in the data


# -- against PostgreSQL -------------------------------------------------------------------


async def test_seeds_plausible_ukrainian_data(
    settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    # Given an empty migrated database; when 3,000 clients are seeded
    report = await _seed(settings, 3000)
    # Then every table is filled, with the counts the report gives
    for table in TABLES:
        assert report.rows[table] == await admin_conn.fetchval(f"SELECT count(*) FROM {table}") > 0
    assert report.rows["clients"] == 3000
    assert 1.04 < report.rows["accounts"] / 3000 < 1.08
    assert report.rows["contacts"] > report.rows["clients"]
    # The search keys the seeder writes itself (its triggers are off) are the database's.
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM clients WHERE search_keys <> herald_client_search_keys(id, name_search)"
        )
        == 0
    )
    assert await admin_conn.fetchval("SELECT min(cardinality(search_keys)) FROM clients") >= 10

    accounts = await admin_conn.fetch("SELECT or_number, eic_code, region_code FROM accounts")
    ors = [r["or_number"] for r in accounts]
    assert all(re.fullmatch(r"[1-9][0-9]{9}", o) for o in ors) and len(set(ors)) == len(ors)
    eics = [r["eic_code"] for r in accounts]
    assert len(set(eics)) == len(eics)
    assert all(e.startswith("56X") and eic_check_char(e) == e[15] for e in eics)
    assert "UA-43" not in {r["region_code"] for r in accounts}

    phones = [
        r[0] for r in await admin_conn.fetch("SELECT phone FROM contacts WHERE phone IS NOT NULL")
    ]
    assert all(_PHONE.match(p) for p in phones)
    # A few numbers are shared by two different clients (family members), not many.
    shared = await admin_conn.fetchval(
        "SELECT count(*) FROM (SELECT phone FROM contacts WHERE phone IS NOT NULL "
        "GROUP BY phone HAVING count(DISTINCT client_id) > 1) s"
    )
    assert 0 < shared < 0.05 * 3000
    email_share = await admin_conn.fetchval("SELECT avg((email IS NOT NULL)::int) FROM contacts")
    assert 0.35 < email_share < 0.6
    assert (
        await admin_conn.fetchval("SELECT count(*) FROM contacts WHERE phone IS NULL") > 0
    )  # e-mail only

    # Every account has exactly one active owner; a holder's contact is shared by their accounts.
    assert (
        await admin_conn.fetchval("""
        SELECT count(*) FROM accounts a
        WHERE (SELECT count(*) FROM account_contacts l
               WHERE l.account_id = a.id AND l.role = 'owner' AND l.is_active) <> 1""")
        == 0
    )
    assert (
        await admin_conn.fetchval("""
        SELECT count(*) FROM (SELECT contact_id FROM account_contacts GROUP BY contact_id
                              HAVING count(*) > 1) s""")
        > 0
    )
    roles = {r[0] for r in await admin_conn.fetch("SELECT DISTINCT role FROM account_contacts")}
    assert roles == {"owner", "co_owner", "billing_contact"}

    # Debt is never negative and never more than what the balance owes; 15-25 % are debtors.
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM billing_snapshots WHERE debt < 0 OR (debt > 0 AND balance > -debt)"
        )
        == 0
    )
    debtors = await admin_conn.fetchval("SELECT avg((debt > 0)::int) FROM billing_snapshots")
    assert 0.12 < debtors < 0.28

    # Consents are sparse explicit choices: marketing opt-ins a minority per channel.
    shares = dict(
        await admin_conn.fetch("""
        SELECT channel, count(*)::float / 3000 FROM consents
        WHERE topic = 'marketing' AND opted_in GROUP BY channel""")
    )
    assert 0.02 < shares["sms"] < 0.15 and 0.03 < shares["viber"] < 0.2
    assert all(share < 0.25 for share in shares.values())
    service_out = await admin_conn.fetchval(
        "SELECT count(*)::float / 3000 FROM consents WHERE topic <> 'marketing' AND NOT opted_in"
    )
    assert 0.01 < service_out < 0.1

    clients = await admin_conn.fetch(
        "SELECT last_name, first_name, middle_name, birth_date, passport_number, tax_id FROM clients"
    )
    for c in clients:
        if c["passport_number"] is not None:
            assert _PASSPORT.match(c["passport_number"]), c["passport_number"]
        if c["tax_id"] is not None:
            assert tax_id_valid(c["tax_id"])
            if c["birth_date"] is not None:  # RNOKPP digits 1-5 are the birth date
                assert TAX_EPOCH + timedelta(days=int(c["tax_id"][:5])) == c["birth_date"]
        if c["middle_name"] and c["tax_id"]:  # sex in the tax number matches the patronymic
            male = int(c["tax_id"][8]) % 2 == 1
            assert c["middle_name"].endswith(("ич", "іч")) == male, dict(c)
    taxes = [c["tax_id"] for c in clients if c["tax_id"]]
    assert len(set(taxes)) == len(taxes)
    text = " ".join(f"{c['last_name']} {c['first_name']} {c['middle_name']}" for c in clients)
    assert {"'", "\u2019", "\u02bc"} <= set(text)  # all three apostrophe spellings occur

    # Identity sequences continue after the seeded ids.
    new_id = await admin_conn.fetchval(
        "INSERT INTO clients (last_name, first_name) VALUES ('Тест', 'Тест') RETURNING id"
    )
    assert new_id == 3001


async def test_same_seed_same_rows_whatever_the_processes(
    settings: Settings, admin_conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so two processes really generate different chunks at once.
    monkeypatch.setattr(generate, "CHUNK_CLIENTS", 700)
    await _seed(settings, 2000, seed=5, processes=1)
    one_process = await _digest(admin_conn)
    report = await _seed(settings, 2000, seed=5, processes=2, reset=True)
    assert set(TABLES) <= set(report.truncated)
    assert await _digest(admin_conn) == one_process
    await _seed(settings, 2000, seed=6, reset=True)
    other_seed = await _digest(admin_conn)
    assert all(other_seed[t] != one_process[t] for t in TABLES)


async def test_indexes_constraints_and_triggers_come_back(
    settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    # Given a user trigger on a seeded table (as an audit trigger would be)
    await admin_conn.execute("""
        CREATE FUNCTION seed_test_count() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'trigger fired during seeding'; END $$;
        CREATE TRIGGER seed_test_trg BEFORE INSERT ON clients FOR EACH ROW EXECUTE FUNCTION seed_test_count();
    """)
    before = await _schema(admin_conn)
    # When seeding (the trigger would fail every row if it fired)
    report = await _seed(settings, 500)
    # Then indexes, constraints (validated) and the enabled trigger are exactly as before
    assert await _schema(admin_conn) == before
    assert report.rebuild_seconds and report.index_rebuild_seconds >= 0
    with pytest.raises(asyncpg.RaiseError, match="trigger fired"):
        await admin_conn.execute("INSERT INTO clients (last_name, first_name) VALUES ('А', 'Б')")


async def test_failure_midway_rolls_back_rows_and_schema(
    settings: Settings, admin_conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "CHUNK_CLIENTS", 400)
    before = await _schema(admin_conn)
    real_copy = load.copy_chunk
    calls = 0

    async def copy_then_fail(conn: asyncpg.Connection, chunk: generate.ChunkData) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        await real_copy(conn, chunk)

    monkeypatch.setattr(load, "copy_chunk", copy_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        await _seed(settings, 1200)
    assert await _schema(admin_conn) == before
    assert await admin_conn.fetchval("SELECT count(*) FROM clients") == 0


async def test_refuses_data_without_reset_and_resets(
    settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    await _seed(settings, 300)
    digest = await _digest(admin_conn)
    with pytest.raises(SeedError, match="already hold data"):
        await _seed(settings, 300, seed=2)
    assert await _digest(admin_conn) == digest  # untouched

    report = await _seed(settings, 400, seed=2, reset=True)
    assert (
        report.rows["clients"] == await admin_conn.fetchval("SELECT count(*) FROM clients") == 400
    )
    assert await admin_conn.fetchval("SELECT min(id) FROM clients") == 1


async def test_reset_never_empties_protected_tables(
    settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    # Given users pointing at clients (so TRUNCATE clients CASCADE would reach users)
    await _seed(settings, 100)
    await admin_conn.execute("ALTER TABLE users ADD COLUMN client_id bigint REFERENCES clients")
    await admin_conn.execute(
        "INSERT INTO users (login, full_name, password_hash) VALUES ('seedtest', 'Seed Test', 'x')"
    )
    with pytest.raises(SeedError, match="users"):
        await _seed(settings, 100, reset=True)
    assert await admin_conn.fetchval("SELECT count(*) FROM users WHERE login = 'seedtest'") == 1
    assert await admin_conn.fetchval("SELECT count(*) FROM clients") == 100
