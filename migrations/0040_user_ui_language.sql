-- The web UI's language, stored per user (issue 13): Ukrainian first, English second.
-- The application role already updates users (passwords, lock-out); no new grant needed.
ALTER TABLE users ADD COLUMN ui_language text NOT NULL DEFAULT 'uk'
    CHECK (ui_language IN ('uk', 'en'));
