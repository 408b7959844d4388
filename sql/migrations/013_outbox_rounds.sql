-- The relay numbers the outbox by round instead of by row (docs/reliability.md "Events: the
-- outbox and its relay"; docs/performance.md "Events on against off").
--
-- Before, the relay numbered every visible outbox row with an UPDATE of that row (a new row
-- version, an entry in the event_id index, their WAL), read the numbered rows back by that index
-- and deleted them by it, a statement each. Now a numbering round writes one row here: the `seq`
-- values of the outbox rows it numbered, in `seq` order, and the event_id of the first (the k-th
-- seq has event_id first_event_id + k - 1). The outbox rows are never rewritten; they are deleted
-- by `seq` once JetStream holds their events, and the round's row once JetStream holds its last
-- event. A round not wholly acknowledged (a crash, NATS down) is published again with the same
-- numbers: JetStream's deduplication and the stream's last event_id keep it exactly once, as
-- before.
--
-- The outbox is no longer scanned whole each round: its dead rows (every published event leaves
-- one until autovacuum's next pass, up to a minute later) made each round's scans cost in
-- proportion to the minute's events. Each row carries the id of the transaction that wrote it
-- (`xid`, indexed), and the relay keeps the oldest transaction still running when it last
-- numbered (investment_event_relay.numbered_xmin, its statement's snapshot's xmin): a row that
-- statement could not see was written by a transaction running then or started later, so its
-- xid is at least that; the relay looks for new rows from there on (an index range of the
-- recent rows only), and finds the rows of a round by the oldest xid among them.
CREATE TABLE investment_event_round (
    first_event_id bigint   PRIMARY KEY,
    seqs           bigint[] NOT NULL
        CONSTRAINT investment_event_round_not_empty CHECK (cardinality(seqs) > 0),
    low_xid        xid8     NOT NULL  -- the oldest writing transaction of its rows
);
-- Written once, read by slices: kept uncompressed (compressing a large round's array cost more
-- than storing it).
ALTER TABLE investment_event_round ALTER COLUMN seqs SET STORAGE EXTERNAL;

ALTER TABLE investment_event ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX investment_event_xid ON investment_event (xid);
ALTER TABLE investment_event_relay ADD COLUMN numbered_xmin xid8 NOT NULL DEFAULT '0';

-- The lowest xid an unpublished row can have, given the relay's `floor`: the floor itself, unless
-- it lies beyond every transaction id handed out so far - the database was reloaded into another
-- cluster (pg_dump and restore: the rows keep their old xids, new transactions get lower ones) -
-- then 0, every row. Transaction ids only grow within one cluster (PITR and pg_upgrade keep them).
CREATE FUNCTION relay_floor(floor xid8) RETURNS xid8
LANGUAGE sql STABLE
RETURN CASE WHEN floor > pg_snapshot_xmax(pg_current_snapshot()) THEN '0'::xid8 ELSE floor END;

-- Rows numbered and not yet deleted (their events published or not): one round each, with the
-- number they carry, so they are published (or forgotten) as before.
INSERT INTO investment_event_round (first_event_id, seqs, low_xid)
SELECT event_id, ARRAY[seq], xid FROM investment_event WHERE event_id IS NOT NULL;

DROP INDEX investment_event_event_id;
ALTER TABLE investment_event DROP COLUMN event_id;

-- The outbox's rows are never rewritten now: the service's role inserts and deletes them.
REVOKE UPDATE ON investment_event FROM investment_service;
GRANT SELECT, INSERT, DELETE ON investment_event_round TO investment_service;
