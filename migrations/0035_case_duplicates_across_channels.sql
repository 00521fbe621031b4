-- Duplicates across channels (issue 20 point 5, SR-06): the same client writing about the
-- same thing by e-mail and then at the walk-in desk is flagged too. Within the admin's
-- duplicate window, an earlier case of the same client is the original when its
-- normalised text is the same (any channel), or when its text is similar (at least this
-- share of the shorter text's words, crm/cases/text.py) and its topic agrees (the same
-- category, one under the other, or not known on either side).
ALTER TABLE case_settings
    ADD COLUMN duplicate_similarity_percent smallint NOT NULL DEFAULT 60
        CHECK (duplicate_similarity_percent BETWEEN 30 AND 100);
