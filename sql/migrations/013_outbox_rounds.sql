-- The relay numbers the outbox by round instead of by row (docs/reliability.md "Events: the
-- outbox and its relay"; docs/performance.md "Events on against off").
--
-- Before, the relay numbered every visible outbox row with an UPDATE of that row (a new row
-- version, an entry in the event_id index, their WAL), read the numbered rows back by that index
-- and deleted them by it: most of the relay's PostgreSQL CPU per event. Now a numbering round
-- writes one row here: the `seq` values of the outbox rows it numbered, in `seq` order, and the
-- event_id of the first (the k-th seq has event_id first_event_id + k - 1). The outbox rows are
-- never rewritten; they are deleted by `seq` once JetStream holds their events, and the round's
-- row once JetStream holds its last event. A round not wholly acknowledged (a crash, NATS
-- down) is published again with the same numbers: JetStream's deduplication and the stream's
-- last event_id keep it exactly once, as before.
CREATE TABLE investment_event_round (
    first_event_id bigint   PRIMARY KEY,
    seqs           bigint[] NOT NULL
        CONSTRAINT investment_event_round_not_empty CHECK (cardinality(seqs) > 0)
);

-- Rows numbered and not yet deleted (their events published or not): one round each, with the
-- number they carry, so they are published (or forgotten) as before.
INSERT INTO investment_event_round (first_event_id, seqs)
SELECT event_id, ARRAY[seq] FROM investment_event WHERE event_id IS NOT NULL;

DROP INDEX investment_event_event_id;
ALTER TABLE investment_event DROP COLUMN event_id;

-- The outbox's rows are never rewritten now: the service's role inserts and deletes them.
REVOKE UPDATE ON investment_event FROM investment_service;
GRANT SELECT, INSERT, DELETE ON investment_event_round TO investment_service;
