-- Name and address search (issue 4, point 7) at 13 M: statistics fine enough to estimate
-- a word.
--
-- A search word is a regular expression anchored at a word start (crm/search.py), which
-- the trigram indexes of 0003 answer. With the default 100-entry histogram the planner
-- saw no entry matching "семен" (2 % of clients) and took its floor of 0.01 %, so it
-- sorted 290 k rows (4.5 s) and reported 1,300 matches. crm/search.py now measures
-- whether to walk ids in order or ask the index, but the estimated count, the choice of
-- which side of a combined search drives, and whether an exact count is worth trying
-- still come from these estimates. A 1,000-entry histogram resolves 0.1 % and keeps
-- planning cheap (the planner runs each pattern against every entry: about 7 ms per
-- word at 3,000 entries on the loaded 2-core machine). ANALYZE samples 300 k rows per
-- table. The seeder's ANALYZE after a load keeps these targets: they belong to the
-- columns.
ALTER TABLE clients ALTER COLUMN name_search SET STATISTICS 1000;
ALTER TABLE accounts ALTER COLUMN address_search SET STATISTICS 1000;
ANALYZE clients (name_search);
ANALYZE accounts (address_search);
