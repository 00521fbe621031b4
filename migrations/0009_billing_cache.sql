-- The billing connector's cache (issue 4, point 2): billing_snapshots (0003) keeps the
-- last answer of the billing service per account, not only its totals.
--
-- Plain ADD COLUMN without defaults: a catalogue change only, instant on 13 M rows.
-- Rows loaded before the connector existed (the seeder) have these NULL; the card
-- treats such a row as incomplete and refreshes it.
--
-- JSON shapes (the timeline reads charges and payments from here; keep the keys):
--   charges      [{"id", "period": "YYYY-MM-01", "volume_m3": "12.345", "amount": "123.45",
--                  "posted_at": ISO-8601}]
--   payments     [{"id", "paid_at": ISO-8601, "amount": "123.45", "method"}]
--   equipment    [{"kind", "model", "installed_on": "YYYY-MM-DD" | null}]
--   gdo_readings [{"meter_serial", "value": "1234.567", "read_on": "YYYY-MM-DD"}]
-- tariff_code is billing's own code, deliberately without a foreign key: billing may
-- know a tariff before Herald's tariffs table does, and that must not fail the refresh.

ALTER TABLE billing_snapshots
    ADD COLUMN tariff_code  text,
    ADD COLUMN charges      jsonb,
    ADD COLUMN payments     jsonb,
    ADD COLUMN equipment    jsonb,
    ADD COLUMN gdo_readings jsonb,
    ADD COLUMN refreshed_by text;

COMMENT ON COLUMN billing_snapshots.refreshed_by IS
    'login of the user whose card read or explicit refresh fetched this row from billing';
