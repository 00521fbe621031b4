-- Statistics for "last digits" phone search (0012's reverse(phone_digits) index).
-- The planner ignores the statistics of a partial index's expression, so it guessed
-- ~100 k matching contacts and walked contacts_client_idx through all 13 M rows (15 s
-- measured at 13 M) instead of reading the index (0.1 ms). Expression statistics
-- (PostgreSQL 14+) give it the real distribution. ANALYZE reads a fixed sample
-- (~30 k rows), so this is quick at 13 M.
CREATE STATISTICS contacts_phone_rev_stats ON (reverse(phone_digits)) FROM contacts;
ANALYZE contacts;
