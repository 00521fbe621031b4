-- The business time zone as one setting (issue 18): HERALD_BUSINESS_TZ, Europe/Kyiv by default.
--
-- herald_business_tz() reads the session setting herald.business_tz, which Herald's
-- connections carry when the setting is not the default (herald/settings.py puts it in the
-- database URLs, as it does the clock offset). Every SQL that named Europe/Kyiv reads it
-- instead: the case number's year, the default zone of a region and of a business calendar.

CREATE FUNCTION herald_business_tz() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(nullif(current_setting('herald.business_tz', true), ''),
                          'Europe/Kyiv') $$;

CREATE OR REPLACE FUNCTION cases_assign_number() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    n text;
BEGIN
    IF NEW.number IS NULL THEN
        n := nextval('case_number_seq')::text;
        NEW.number := 'ЗВ-' || to_char(NEW.created_at AT TIME ZONE herald_business_tz(), 'YYYY')
                      || '-' || lpad(n, greatest(7, length(n)), '0');
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE regions ALTER COLUMN time_zone SET DEFAULT herald_business_tz();
ALTER TABLE business_calendars ALTER COLUMN time_zone SET DEFAULT herald_business_tz();
