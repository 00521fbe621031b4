-- Name and address search by word-start keys (issue 4, point 7).
--
-- A search word must start a word of the owner's name or of an account's address
-- ("шевч" finds Шевченко, "12" finds building 12, 12А and 120). Until now the trigram
-- indexes of 0003 answered these as regular expressions. At 13 M that missed p95 <= 150
-- ms: a short word's trigrams (" ол", "оле") are on millions of rows, the index hands
-- back every row that has them and the regular expression then checks each one, and a
-- name AND an address lived in two tables, so their intersection needed the rows of
-- both sides ("харчен" + "вул. цен 8": 65,000 clients and 40,000 accounts for a few
-- hundred matches, 2.8 s).
--
-- Now every client row carries the keys of its words: each word of the normalised name
-- (tag 'n') and of the normalised address of each of its accounts (tag 'a'), split at
-- spaces and hyphens, contributes its prefixes of 1 to 8 letters; a key is the first 32
-- bits of the md5 of tag || prefix. A query word becomes one key (its first 8 letters;
-- an abbreviation such as "вул." its letters), so a name AND an address is one GIN
-- lookup that intersects compressed posting lists without reading a row, and the
-- planner's element statistics estimate it. The rows found are then checked exactly
-- (the whole word at a word start, and the address words on one and the same
-- account). A hash collision only lets a row through to that check. Python twin:
-- crm/search_words.py (tests check they agree); the seeder writes the column itself
-- (its triggers are off while it loads).
--
-- On a database that already holds data the backfill below rewrites every client row
-- once (500,000 clients: 86 s here with 0030; see the README).

-- (string_to_array, not regexp_split_to_table: a quarter of the time, measured on 20,000 names
-- with 3-6 letter keys.)
CREATE FUNCTION herald_search_keys(norm text, tag text) RETURNS int[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY(
        SELECT DISTINCT ('x' || left(md5(tag || left(w, n)), 8))::bit(32)::int
        FROM unnest(string_to_array(translate(coalesce(norm, ''), '-', ' '), ' ')) AS w,
             generate_series(1, least(length(w), 8)) AS n
        ORDER BY 1);

-- The keys of a client: its name's, then those of the addresses of all its accounts
-- (the two lists ascending each; tags keep them apart). One function call over the joined
-- addresses, not a union of one per account: half the time (50,000 clients: 4.5 s against
-- 9.3 s, with 45 keys a client, measured while the test suite ran).
CREATE FUNCTION herald_client_search_keys(client bigint, name_norm text) RETURNS int[]
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN herald_search_keys(name_norm, 'n')
           || herald_search_keys((SELECT string_agg(a.address_search, ' ') FROM accounts a
                                  WHERE a.client_id = client), 'a');

ALTER TABLE clients ADD COLUMN search_keys int[] NOT NULL DEFAULT '{}';

-- A client's own row: its name is the same expression as clients.name_search (0003),
-- which is not computed yet when a BEFORE trigger runs.
CREATE FUNCTION clients_search_keys_set() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_keys := herald_client_search_keys(
        NEW.id, herald_search_norm(NEW.last_name || ' ' || NEW.first_name || coalesce(' ' || NEW.middle_name, '')));
    RETURN NEW;
END $$;
CREATE TRIGGER clients_search_keys BEFORE INSERT OR UPDATE OF id, last_name, first_name, middle_name
    ON clients FOR EACH ROW EXECUTE FUNCTION clients_search_keys_set();

-- Accounts: the clients whose accounts' addresses (or owners) changed get their keys again.
CREATE FUNCTION clients_search_keys_refresh(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    UPDATE clients c SET search_keys = k.keys
    FROM (SELECT id, herald_client_search_keys(id, name_search) AS keys
          FROM clients WHERE id = ANY(ids)) k
    WHERE c.id = k.id AND c.search_keys IS DISTINCT FROM k.keys
$$;
CREATE FUNCTION accounts_search_keys_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_search_keys_refresh(ARRAY(SELECT DISTINCT client_id FROM new_rows));
    RETURN NULL;
END $$;
CREATE FUNCTION accounts_search_keys_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_search_keys_refresh(ARRAY(SELECT DISTINCT client_id FROM old_rows));
    RETURN NULL;
END $$;
CREATE FUNCTION accounts_search_keys_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_search_keys_refresh(ARRAY(
        SELECT unnest(ARRAY[n.client_id, o.client_id])
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.client_id, n.address_search) IS DISTINCT FROM (o.client_id, o.address_search)));
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_search_keys_ins AFTER INSERT ON accounts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_search_keys_new();
CREATE TRIGGER accounts_search_keys_upd AFTER UPDATE ON accounts
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_search_keys_update();
CREATE TRIGGER accounts_search_keys_del AFTER DELETE ON accounts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_search_keys_old();

-- Backfill. A key change is not a segment attribute, and the segments' dirty marking
-- (0013) keeps a transition table of every row updated, even while disabled (13 M rows
-- spilled to disk), so it is dropped for the backfill and put back as 0013 made it.
DROP TRIGGER segments_dirty_upd ON clients;
UPDATE clients c SET search_keys = herald_client_search_keys(c.id, c.name_search);
CREATE TRIGGER segments_dirty_upd AFTER UPDATE ON clients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION segments_dirty_clients_new();

SET LOCAL maintenance_work_mem = '1GB';
CREATE INDEX clients_search_keys_idx ON clients USING gin (search_keys);
-- The key frequencies (most common elements) tell crm/search.py whether walking the ids
-- in order or collecting the matches from the index is cheaper; 1,000 keeps up to
-- 10,000 keys with their frequencies.
ALTER TABLE clients ALTER COLUMN search_keys SET STATISTICS 1000;
ALTER TABLE clients ALTER COLUMN name_search SET STATISTICS -1;
ALTER TABLE accounts ALTER COLUMN address_search SET STATISTICS -1;
DROP INDEX clients_name_trgm_idx;
DROP INDEX accounts_address_trgm_idx;
ANALYZE clients;
ANALYZE accounts (address_search);
