-- One clock for the database, the same as Python's (herald/clock.py).
--
-- herald_now() is now() plus the offset in the setting herald.clock_offset (an interval;
-- none in production), herald_clock_timestamp() the same for clock_timestamp(). Herald's
-- connections set the offset from HERALD_CLOCK_OFFSET_DAYS, so a whole stand or test run
-- can live on another day, and a test can move both clocks together.
--
-- Every function, column default, trigger condition and view written before this migration that read the
-- clock directly is rewritten below to read these instead; tests/test_clock.py fails on
-- any new one that reads now(), clock_timestamp(), current_date or current_timestamp.

CREATE FUNCTION herald_clock_offset() RETURNS interval
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(nullif(current_setting('herald.clock_offset', true), '')::interval,
                          interval '0') $$;

CREATE FUNCTION herald_now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT now() + herald_clock_offset() $$;

CREATE FUNCTION herald_clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$ SELECT clock_timestamp() + herald_clock_offset() $$;

-- The rewrite: the same text with the clock calls replaced.
CREATE FUNCTION pg_temp.herald_clock_rewrite(body text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(body,
        '\mnow\(\)', 'herald_now()', 'gi'),
        '\mclock_timestamp\(\)', 'herald_clock_timestamp()', 'gi'),
        '\mcurrent_date\M', '(herald_now())::date', 'gi'),
        '\mcurrent_timestamp\M', 'herald_now()', 'gi')
    $$;

CREATE FUNCTION pg_temp.herald_reads_clock(body text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT body ~* '\m(now\(\)|clock_timestamp\(\)|current_date\M|current_timestamp\M)' $$;

DO $$
DECLARE
    f record;
    d record;
    v record;
    t record;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
           AND p.proname NOT IN ('herald_clock_offset', 'herald_now', 'herald_clock_timestamp')
           AND pg_temp.herald_reads_clock(p.prosrc)
    LOOP
        EXECUTE pg_temp.herald_clock_rewrite(pg_get_functiondef(f.oid));
    END LOOP;

    -- ONLY: each table and each partition is visited on its own.
    FOR d IN
        SELECT c.oid::regclass AS rel, a.attname, pg_get_expr(ad.adbin, ad.adrelid) AS expr
          FROM pg_attrdef ad
          JOIN pg_class c ON c.oid = ad.adrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
         WHERE n.nspname = 'public' AND a.attgenerated = ''
           AND pg_temp.herald_reads_clock(pg_get_expr(ad.adbin, ad.adrelid))
    LOOP
        EXECUTE format('ALTER TABLE ONLY %s ALTER COLUMN %I SET DEFAULT %s',
                       d.rel, d.attname, pg_temp.herald_clock_rewrite(d.expr));
    END LOOP;

    -- Triggers' WHEN conditions (a trigger is dropped and made again in this transaction).
    FOR t IN
        SELECT tg.tgname, tg.tgrelid::regclass AS rel, pg_get_triggerdef(tg.oid) AS def
          FROM pg_trigger tg
          JOIN pg_class c ON c.oid = tg.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT tg.tgisinternal AND tg.tgparentid = 0
           AND pg_temp.herald_reads_clock(pg_get_triggerdef(tg.oid))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
        EXECUTE pg_temp.herald_clock_rewrite(t.def);
    END LOOP;

    FOR v IN
        SELECT c.oid::regclass AS rel, pg_get_viewdef(c.oid) AS def
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'v'
           AND pg_temp.herald_reads_clock(pg_get_viewdef(c.oid))
    LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v.rel,
                       pg_temp.herald_clock_rewrite(v.def));
    END LOOP;
END
$$;
