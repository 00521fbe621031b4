-- Segment members by generation (issue 6, materialising 5 M members in <= 30 s).
--
-- A materialisation used to delete the old members row by row, then insert the new ones
-- under a foreign key that checked every row: the delete and the 5 M key checks were
-- most of its time. Now the members of a segment are a *set* of rows with a set id of
-- their own; a materialisation fills a new set (on two connections at once, each a
-- range of client ids, from one shared snapshot) and then points the segment at it in
-- one short UPDATE, so readers see the old set or the new one, never a mix. The old set
-- is listed in segment_member_sets_retired and its rows are deleted later, a chunk at a
-- time, by a scheduler duty. Every row is written to the WAL: a crash loses no snapshot.
--
-- The view segment_members keeps the shape readers used: (segment_id, client_id) of the
-- current set of each segment.

ALTER TABLE segment_members DROP CONSTRAINT segment_members_segment_id_fkey;
ALTER TABLE segment_members RENAME TO segment_member_rows;
ALTER TABLE segment_member_rows RENAME COLUMN segment_id TO set_id;
ALTER INDEX segment_members_pkey RENAME TO segment_member_rows_pkey;

-- Existing members keep their rows: their set id is their segment's id.
ALTER TABLE segments ADD COLUMN members_set bigint;
UPDATE segments SET members_set = id;
-- One set belongs to one segment at most.
CREATE UNIQUE INDEX segments_members_set_idx ON segments (members_set);

CREATE SEQUENCE segment_member_set_seq;
SELECT setval('segment_member_set_seq', coalesce((SELECT max(id) FROM segments), 0) + 1, false);

-- Sets whose rows are to be deleted: replaced or deleted segments' sets, and a set being
-- filled (listed before its first row is written, removed when a segment adopts it, so a
-- fill that fails or a crash leaves nothing behind for good). The filling transaction
-- holds a row lock on its entry; the purge skips locked entries.
CREATE TABLE segment_member_sets_retired (
    set_id     bigint PRIMARY KEY,
    retired_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW segment_members AS
    SELECT s.id AS segment_id, r.client_id
    FROM segments s JOIN segment_member_rows r ON r.set_id = s.members_set;
