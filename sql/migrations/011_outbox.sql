-- The outbox of investment events (docs/reliability.md "Events: the outbox and its relay").
--
-- invest_many() (and the cancellation) add one row per accepted investment (or cancellation) in
-- the transaction that writes the ledger row, while a relay is configured (investment_event_relay
-- .seen_at is set). The relay (service/relay.py, one per database: a session advisory lock) then
-- numbers the rows it can see - every one of them committed - in `seq` order, publishes them to
-- NATS JetStream in event_id order and deletes what JetStream acknowledged.
--
-- No index is written on the invest path: `seq` orders rows of one snapshot (it is taken after
-- the product rows are locked, so two calls on one product take their values in commit order),
-- the relay finds the unnumbered rows by a scan of this small table and numbers them by ctid, and
-- event_id is indexed only once it is set.
CREATE TABLE investment_event (
    seq                      bigint      GENERATED ALWAYS AS IDENTITY,
    event_id                 bigint,  -- NULL until the relay numbers it
    type                     text        NOT NULL
        CONSTRAINT investment_event_type_known CHECK (type IN ('accepted', 'cancelled')),
    investment_id            bigint      NOT NULL,
    user_id                  bigint      NOT NULL,
    goods_id                 bigint      NOT NULL,
    amount                   bigint      NOT NULL,
    at                       timestamptz NOT NULL,
    -- The product's counters right after this investment or cancellation.
    current_investing_amount bigint      NOT NULL,
    investor_count           integer     NOT NULL,
    -- When the row was written (just before its commit): the relay's lag and latency count from it.
    recorded_at              timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);

CREATE UNIQUE INDEX investment_event_event_id ON investment_event (event_id)
    WHERE event_id IS NOT NULL;

-- One row: the last event_id handed out (numbers are never reused nor skipped), and when the
-- active relay last said it runs. seen_at NULL: no relay is configured, so nothing is written
-- to the outbox (housekeeping sets it back to NULL, and empties the outbox, once no relay has
-- run for RELAY_ABANDON_HOURS).
-- stream_key names this database's event history: the relay creates the stream with it and
-- publishes only into a stream that carries it (a stream another database filled would make it
-- skip, as already stored, events it never published).
CREATE TABLE investment_event_relay (
    singleton     boolean     PRIMARY KEY DEFAULT true CONSTRAINT investment_event_relay_one CHECK (singleton),
    last_event_id bigint      NOT NULL DEFAULT 0,
    seen_at       timestamptz,
    stream_key    uuid        NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO investment_event_relay DEFAULT VALUES;

GRANT SELECT, INSERT, UPDATE, DELETE ON investment_event TO investment_service;
GRANT USAGE, SELECT ON SEQUENCE investment_event_seq_seq TO investment_service;
GRANT SELECT, UPDATE ON investment_event_relay TO investment_service;
