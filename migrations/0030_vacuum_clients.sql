-- herald:no-transaction
-- Migration 0029 rewrote every client row once (its search keys). Vacuumed now, the old
-- versions stop doubling what a walk of the client ids in order reads, and the visibility
-- map is set again (seconds on a new database; minutes at 13 M, see the README).
VACUUM (ANALYZE) clients;
