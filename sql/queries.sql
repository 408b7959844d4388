-- Every statement the service runs at request time, by name. Loaded once at start
-- (service/sql.py) and executed as prepared statements. Times are formatted here, in the session's
-- time zone (the display time zone), and the product state comes from goods_state(); products are
-- shown through goods_item() (sql/migrations/004_goods_item.sql), whose columns service/goods.py
-- names (the Goods row; 004's mention of GOODS_KEYS predates it).

-- name: list-goods
-- The products whose whole recruitment period lies inside [$1, $2], from the stored counters.
SELECT i.*
FROM investment_goods g
CROSS JOIN LATERAL goods_item(g, statement_timestamp()) i
WHERE g.started_at >= $1 AND g.finished_at <= $2
ORDER BY g.goods_id;

-- name: list-goods-standby
-- list-goods on READ_DATABASE_URL's standby, only while its data is at most $3 seconds old: the
-- age of its last replayed commit (0 on a primary), checked in the same statement, so on the same
-- server as the rows (the read route balances over several standbys) and in one round trip. No
-- rows when it lags (or when the window holds none): the primary then answers. An idle primary
-- makes a standby look older than it is; the list then reads from the primary.
SELECT i.*
FROM investment_goods g
CROSS JOIN LATERAL goods_item(g, statement_timestamp()) i
WHERE g.started_at >= $1 AND g.finished_at <= $2
  AND (SELECT CASE WHEN pg_is_in_recovery()
           THEN coalesce(extract(epoch FROM clock_timestamp()
                                 - pg_last_xact_replay_timestamp()), 1e9)
           ELSE 0 END) <= $3::float8
ORDER BY g.goods_id;

-- name: invest-batch
-- Invests from many requests, for any products, in one transaction: see invest_many() in
-- sql/functions/invest_many.sql. $1..$4: goods ids, user ids, amounts, Idempotency-Keys (or NULL).
-- A product held elsewhere is passed over: its requests come back 'skipped', for invest-wait.
SELECT ord, outcome, found, total_investing_amount, investment_amount, current_investing_amount,
       state, invest_date, investment_id
FROM invest_many($1, $2, $3, $4);

-- name: invest-wait
-- The same for requests whose product was held: waits for its row lock at most $5 milliseconds.
SELECT ord, outcome, found, total_investing_amount, investment_amount, current_investing_amount,
       state, invest_date, investment_id
FROM invest_many($1, $2, $3, $4, NULL, $5);

-- name: cancel-investment
-- Cancels investment $2 of user $1 in one transaction, waiting at most $3 milliseconds for each
-- lock: see cancel_investment() in sql/functions/cancel_investment.sql.
SELECT outcome, investment_id, goods_id, cancelled_amount, cancelled_at, current_investing_amount,
       status, state
FROM cancel_investment($1, $2, NULL, $3);

-- name: my-investments-many
-- A page of ledger rows, oldest first, for each of many requests ($1 user ids, $2 page sizes). A
-- request with a cursor ($3 microseconds since the epoch, $4 ledger id; NULL for a first page)
-- gets the rows after it. Each request is one range scan of user_investment_goods_by_user (index
-- only) for one row more than its page, to know whether a next page exists. One row per request,
-- in request order: `found` (rows read, at most page + 1), the cursor of the page's last row when
-- the page is full, and `body`, the response body itself: the page's items (SPEC §3, in its key
-- order) as a JSON array, UTF-8 bytes (bytea reaches Python as bytes, as is: a text column cost
-- the service a decode and an encode of every page, 3 µs of CPU per ~10-item page, 10 µs at
-- ~40). An item is the product's item_head (sql/migrations/007_goods_item_head.sql: the escaped
-- title and the total, kept with the product) and the ledger row's amount and date, concatenated
-- rather than built by row_to_json() (20 % less PostgreSQL CPU per request). string_agg() takes
-- the items in the order the inner query returns them (ORDER BY with LIMIT, nothing in between
-- that reorders): an ORDER BY inside the aggregate would sort every page again (8 % of the CPU).
-- Cancelled investments are not listed; each item carries its ledger id as `investment_id` (what
-- a cancellation names).
SELECT p.found, p.last_micros, p.last_id,
       convert_to('[' || coalesce(p.items, '') || ']', 'UTF8') AS body
FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[])
     WITH ORDINALITY AS r(user_id, page, after_micros, after_id, ord)
CROSS JOIN LATERAL (
    SELECT string_agg(u.item, ',') FILTER (WHERE u.n <= r.page) AS items,
           count(*) AS found,
           max((extract(epoch FROM u.invest_date) * 1000000)::bigint) FILTER (WHERE u.n = r.page)
               AS last_micros,
           max(u.id) FILTER (WHERE u.n = r.page) AS last_id
    FROM (
        SELECT (SELECT g.item_head FROM investment_goods g WHERE g.goods_id = l.goods_id)
               || ',"user_investing_amount":' || l.user_investing_amount::text
               || ',"invest_date":"' || to_char(l.invest_date, 'YYYY-MM-DD HH24:MI:SS')
               || '","investment_id":' || l.id::text || '}'
                   AS item,
               l.invest_date, l.id,
               row_number() OVER (ORDER BY l.invest_date, l.id) AS n
        FROM user_investment_goods l
        WHERE l.user_id = r.user_id
          AND (l.invest_date, l.id) > (coalesce(timestamptz 'epoch'
                                                + r.after_micros * interval '1 microsecond',
                                                '-infinity'),
                                       coalesce(r.after_id, 0))
          AND NOT EXISTS (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = l.id)
        ORDER BY l.invest_date, l.id
        LIMIT r.page + 1
    ) u
) p
ORDER BY r.ord;

-- name: lock-table-settings
-- What sizes PostgreSQL's shared lock table, where every advisory lock on an Idempotency-Key takes
-- an entry until its call commits: service/db.py key_locks_per_call() bounds the keys per call.
SELECT current_setting('max_locks_per_transaction')::integer,
       current_setting('max_connections')::integer,
       current_setting('max_prepared_transactions')::integer;

-- name: ready
SELECT 1;

-- name: forget-idempotency-keys
-- Deletes up to 10,000 idempotency keys older than $1 hours and counts them (every worker runs it
-- now and then, jittered: service/housekeeping.py). Bounded so it never holds many locks for long.
WITH gone AS (
    DELETE FROM investment_idempotency
    WHERE ctid IN (SELECT ctid FROM investment_idempotency
                   WHERE created_at < statement_timestamp() - make_interval(hours => $1)
                   LIMIT 10000)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: admin-goods-create
-- A product registered through the admin API or CLI (service/goods.py), returned with the
-- list-goods columns.
WITH created AS (
    INSERT INTO investment_goods (title, total_investing_amount, status, started_at, finished_at)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING investment_goods AS g
)
SELECT i.* FROM created c CROSS JOIN LATERAL goods_item(c.g, statement_timestamp()) i;

-- name: admin-goods-update
-- Changes product $1's title, total, period and status ($2..$6; NULL keeps the value) in one
-- statement. The UPDATE's WHERE is re-checked on the locked, latest row, so the total can never be
-- set below what is invested (nor the period inverted), even with invests running. When it
-- refuses, the row comes back unchanged with the reason; no row at all: no such product.
WITH changed AS (
    UPDATE investment_goods g
    SET title = coalesce($2, g.title),
        total_investing_amount = coalesce($3, g.total_investing_amount),
        started_at = coalesce($4, g.started_at),
        finished_at = coalesce($5, g.finished_at),
        status = coalesce($6, g.status)
    WHERE g.goods_id = $1
      AND coalesce($3, g.total_investing_amount) >= g.current_investing_amount
      AND coalesce($5, g.finished_at) > coalesce($4, g.started_at)
    RETURNING g
), answer AS (
    SELECT 'changed' AS outcome, c.g FROM changed c
    UNION ALL
    SELECT CASE
               WHEN coalesce($3, g.total_investing_amount) < g.current_investing_amount
                   THEN 'total_below_invested'
               WHEN coalesce($5, g.finished_at) <= coalesce($4, g.started_at) THEN 'period'
               ELSE 'conflict'
           END, g
    FROM investment_goods g
    WHERE g.goods_id = $1 AND NOT EXISTS (SELECT 1 FROM changed)
)
SELECT a.outcome, i.* FROM answer a CROSS JOIN LATERAL goods_item(a.g, statement_timestamp()) i;

-- name: admin-goods-list
-- Every product, for `python -m service goods list`.
SELECT i.*
FROM investment_goods g
CROSS JOIN LATERAL goods_item(g, statement_timestamp()) i
ORDER BY g.goods_id;

-- name: relay-lock
-- The outbox relay (service/relay.py), on its own session. Its lock: the two-key form of the
-- advisory locks, a key space the single-key locks of invest_many's idempotency keys never use.
-- Released when the session ends, so a relay whose process or connection dies hands over.
SELECT pg_try_advisory_lock(7202104, 25);

-- name: relay-number
-- Numbers every outbox row this statement can see - each one committed - in `seq` order, after
-- the last number handed out: event_id order is commit order (docs/reliability.md). Writes
-- nothing when there is nothing to number. The count numbered.
WITH fresh AS (
    SELECT e.ctid AS row, row_number() OVER (ORDER BY e.seq) AS n
    FROM investment_event e
    WHERE e.event_id IS NULL
), counter AS (
    UPDATE investment_event_relay r
    SET last_event_id = r.last_event_id + (SELECT count(*) FROM fresh)
    WHERE EXISTS (SELECT 1 FROM fresh)
    RETURNING r.last_event_id - (SELECT count(*) FROM fresh) AS base
), numbered AS (
    UPDATE investment_event e
    SET event_id = c.base + f.n
    FROM fresh f, counter c
    WHERE e.ctid = f.row
    RETURNING 1
)
SELECT count(*) FROM numbered;

-- name: relay-pending
-- Up to $2 numbered events after event_id $1, in event_id order, as the relay publishes them
-- (`at` in the display time zone, as the API shows it); recorded_at in epoch seconds.
SELECT event_id, type, investment_id, user_id, goods_id, amount,
       to_char(at, 'YYYY-MM-DD HH24:MI:SS'), current_investing_amount, investor_count,
       extract(epoch FROM recorded_at)::float8
FROM investment_event
WHERE event_id > $1
ORDER BY event_id
LIMIT $2;

-- name: relay-forget
-- Events JetStream has stored: event_id after $1 up to $2. A range, so that the generic plan
-- probes the event_id index (`event_id <= $1` alone was planned as a scan of the whole outbox).
DELETE FROM investment_event WHERE event_id > $1 AND event_id <= $2;

-- name: relay-announce
-- The active relay says it runs: invest_many() writes the outbox while this is recent. Answers
-- this database's stream key.
UPDATE investment_event_relay SET seen_at = statement_timestamp() RETURNING stream_key::text;

-- name: relay-counter
-- The last event_id handed out.
SELECT last_event_id FROM investment_event_relay;

-- name: relay-backlog
-- The events not yet acknowledged by JetStream, and the age in seconds of the oldest (NULL: none).
SELECT count(*), extract(epoch FROM clock_timestamp() - min(recorded_at))::float8
FROM investment_event;

-- name: outbox-abandon
-- Housekeeping: no relay has said it runs for $1 hours (NATS_URL was taken away), so events are
-- no longer written, and the outbox is emptied 10,000 rows at a time. The number deleted.
WITH off AS (
    UPDATE investment_event_relay
    SET seen_at = NULL
    WHERE seen_at < statement_timestamp() - make_interval(hours => $1)
    RETURNING 1
), gone AS (
    DELETE FROM investment_event
    WHERE ctid IN (SELECT ctid FROM investment_event LIMIT 10000)
      AND (EXISTS (SELECT 1 FROM off)
           OR EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NULL))
    RETURNING 1
)
SELECT count(*) FROM gone;
