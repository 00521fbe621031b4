-- Name and address search (issue 4, point 7) at 13 M: statistics fine enough to choose
-- the plan.
--
-- A search word is a regular expression anchored at a word start (crm/search.py), which
-- the trigram indexes of 0003 answer. Whether to walk the ids in order (a common word:
-- the page fills after a few thousand rows) or to collect the matches from the index and
-- sort them (a rare one) depends on how many rows match. With the default 100-entry
-- histogram the planner saw no entry matching "семен" (2 % of clients) and took its
-- floor of 0.01 %, so it sorted 290 k rows (4.5 s). A 3,000-entry histogram resolves
-- 0.03 % and keeps planning cheap: the planner runs each pattern against every entry.
-- ANALYZE then samples 900 k rows per table (about 10 s each at 13 M). The seeder's
-- ANALYZE after a load keeps these targets: they belong to the columns.
ALTER TABLE clients ALTER COLUMN name_search SET STATISTICS 3000;
ALTER TABLE accounts ALTER COLUMN address_search SET STATISTICS 3000;
ANALYZE clients (name_search);
ANALYZE accounts (address_search);
