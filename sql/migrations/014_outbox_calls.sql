-- The outbox holds a call's events in one row instead of a row per event (docs/reliability.md
-- "Events: the outbox and its relay"; docs/performance.md, the sixteenth set).
--
-- Before, invest_many() wrote a row per accepted investment: a heap tuple, an entry in the `xid`
-- index and their WAL each, then the relay read, deleted and (through autovacuum) vacuumed each
-- of them. Now a call writes one row whose columns are arrays, one element per event, in the
-- order of the call's requests (a cancellation writes a row of one event). A round numbers rows,
-- not events: `ends` holds, for each of its rows in `seq` order, how many of the round's events
-- end with that row (the k-th event of the round has event_id first_event_id + k - 1, so a row's
-- events are first_event_id + ends[i - 1] .. first_event_id + ends[i] - 1). A row is deleted once
-- JetStream holds its last event; a round answered in parts may stop inside a row, whose events
-- after the stream's last are answered again by the next round (their numbers unchanged).
ALTER TABLE investment_event
    ADD COLUMN investment_ids            bigint[],
    ADD COLUMN user_ids                  bigint[],
    ADD COLUMN goods_ids                 bigint[],
    ADD COLUMN amounts                   bigint[],
    -- The product's counters right after each investment or cancellation.
    ADD COLUMN current_investing_amounts bigint[],
    ADD COLUMN investor_counts           integer[];

-- Rows written before this migration, published or not: one event each, their numbers kept.
UPDATE investment_event
SET investment_ids = ARRAY[investment_id], user_ids = ARRAY[user_id], goods_ids = ARRAY[goods_id],
    amounts = ARRAY[amount], current_investing_amounts = ARRAY[current_investing_amount],
    investor_counts = ARRAY[investor_count];

ALTER TABLE investment_event
    DROP COLUMN investment_id, DROP COLUMN user_id, DROP COLUMN goods_id, DROP COLUMN amount,
    DROP COLUMN current_investing_amount, DROP COLUMN investor_count,
    ALTER COLUMN investment_ids SET NOT NULL, ALTER COLUMN user_ids SET NOT NULL,
    ALTER COLUMN goods_ids SET NOT NULL, ALTER COLUMN amounts SET NOT NULL,
    ALTER COLUMN current_investing_amounts SET NOT NULL, ALTER COLUMN investor_counts SET NOT NULL,
    ADD CONSTRAINT investment_event_events CHECK (
        cardinality(investment_ids) > 0
        AND cardinality(user_ids) = cardinality(investment_ids)
        AND cardinality(goods_ids) = cardinality(investment_ids)
        AND cardinality(amounts) = cardinality(investment_ids)
        AND cardinality(current_investing_amounts) = cardinality(investment_ids)
        AND cardinality(investor_counts) = cardinality(investment_ids));

-- A call of 100 invests makes a row of about 5 kB: kept in the table's page as it is (by default
-- a row above 2 kB is compressed and moved to the TOAST table, a cost on the invest path and
-- again on the relay's); larger calls' rows are compressed as before.
ALTER TABLE investment_event SET (toast_tuple_target = 8160);

-- The rounds: where each row's events end, and the round's last event_id.
ALTER TABLE investment_event_round
    ADD COLUMN ends integer[],
    ADD COLUMN last_event_id bigint;
UPDATE investment_event_round
SET ends = ARRAY(SELECT generate_series(1, cardinality(seqs))),
    last_event_id = first_event_id + cardinality(seqs) - 1;
ALTER TABLE investment_event_round
    ALTER COLUMN ends SET NOT NULL,
    ALTER COLUMN last_event_id SET NOT NULL,
    ADD CONSTRAINT investment_event_round_ends CHECK (
        cardinality(ends) = cardinality(seqs)
        AND last_event_id = first_event_id + ends[cardinality(ends)] - 1);
ALTER TABLE investment_event_round ALTER COLUMN ends SET STORAGE EXTERNAL;
