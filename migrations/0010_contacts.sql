-- Contacts (issue 4, point 3): passport number for the duplicate check, and merges.
--
-- contacts holds ~13 M rows. Every change here is cheap on it:
-- * ADD COLUMN without a default only touches the catalogue (no rewrite). passport_norm is
--   a plain column the application fills (crm/contacts.py normalises: upper case, no
--   spaces or dashes, Latin look-alike letters turned Cyrillic), NOT a generated column,
--   which would rewrite the table under an exclusive lock.
-- * The CHECK and FOREIGN KEY constraints are added NOT VALID: every existing row is NULL
--   in these columns, so there is nothing to validate, and NOT VALID skips the full scan
--   while still checking every row written from now on.
-- * The two indexes are partial; they still read the table once to build (seconds), but
--   stay tiny because few contacts have a passport and fewer are merged.

ALTER TABLE contacts
    ADD COLUMN passport_number text,
    ADD COLUMN passport_norm   text,
    -- The surviving contact this one was merged into; set together with is_active = false.
    ADD COLUMN merged_into     bigint;

ALTER TABLE contacts
    ADD CONSTRAINT contacts_passport_norm_check
        CHECK (passport_norm ~ '^([А-ЯҐЄІЇ]{2}[0-9]{6}|[0-9]{9})$') NOT VALID,
    ADD CONSTRAINT contacts_passport_pair_check
        CHECK ((passport_number IS NULL) = (passport_norm IS NULL)) NOT VALID,
    ADD CONSTRAINT contacts_merged_into_check
        CHECK (merged_into IS NULL OR (merged_into <> id AND NOT is_active)) NOT VALID,
    ADD CONSTRAINT contacts_merged_into_fkey
        FOREIGN KEY (merged_into) REFERENCES contacts (id) NOT VALID;

CREATE INDEX contacts_passport_idx ON contacts (passport_norm) WHERE passport_norm IS NOT NULL;
CREATE INDEX contacts_merged_into_idx ON contacts (merged_into) WHERE merged_into IS NOT NULL;
