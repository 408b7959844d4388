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
-- A product held by another call of the service is waited for (up to 500 ms); one held by
-- another transaction is passed over: its requests come back 'skipped', for invest-wait.
SELECT ord, outcome, found, total_investing_amount, investment_amount, current_investing_amount,
       state, invest_date, investment_id, refused, refused_value
FROM invest_many($1, $2, $3, $4);

-- name: invest-wait
-- The same for requests whose product was held: waits for its row lock at most $5 milliseconds.
SELECT ord, outcome, found, total_investing_amount, investment_amount, current_investing_amount,
       state, invest_date, investment_id, refused, refused_value
FROM invest_many($1, $2, $3, $4, NULL, $5);

-- name: investor-limits
-- User $1's class, caps (NULL: none), live amounts and room (GET user/limits, service/caps.py);
-- with product $2 (NULL: none) also whether it exists and the largest amount an invest in it
-- would be granted in full now: the least of the product's remaining amount (0 unless
-- recruiting) and the room each cap in force leaves there (per_product less the user's live
-- amount in it; total and real_estate, unless the product is repaid), rounded down to the
-- product's amount_unit, and 0 below its min_amount. Read on the primary: the user's own writes
-- are in it (invest_many() keeps these amounts in the invest's transaction).
SELECT coalesce(i.investor_class, 'general') AS investor_class,
       c.per_product, c.total, c.real_estate,
       coalesce(i.invested_total, 0) AS invested_total,
       coalesce(i.invested_real_estate, 0) AS invested_real_estate,
       g.goods_id IS NOT NULL AS goods_found,
       CASE WHEN g.goods_id IS NOT NULL THEN
           (SELECT CASE WHEN m.most < g.min_amount THEN 0
                        ELSE m.most / g.amount_unit * g.amount_unit END
            FROM (SELECT greatest(0, least(
                      CASE WHEN goods_state(g.status, g.current_investing_amount,
                                            g.total_investing_amount, g.started_at,
                                            g.finished_at, statement_timestamp()) = 'recruiting'
                           THEN g.total_investing_amount - g.current_investing_amount
                           ELSE 0 END,
                      c.per_product - coalesce(a.amount, 0),
                      CASE WHEN NOT g.repaid THEN c.total - coalesce(i.invested_total, 0) END,
                      CASE WHEN NOT g.repaid AND g.category = 'real_estate'
                           THEN c.real_estate - coalesce(i.invested_real_estate, 0) END))
                      AS most) m)
       END AS remaining_for_goods
FROM (SELECT $1::bigint AS user_id, $2::bigint AS goods_id) r
LEFT JOIN investor i ON i.user_id = r.user_id
JOIN investor_class_limit c ON c.investor_class = coalesce(i.investor_class, 'general')
LEFT JOIN investment_goods g ON g.goods_id = r.goods_id
LEFT JOIN investment_goods_investor a ON a.goods_id = r.goods_id AND a.user_id = r.user_id;

-- name: cancel-investment
-- Cancels investment $2 of user $1 in one transaction, waiting at most $3 milliseconds for each
-- lock: see cancel_investment() in sql/functions/cancel_investment.sql.
SELECT outcome, investment_id, goods_id, cancelled_amount, cancelled_at, current_investing_amount,
       status, state
FROM cancel_investment($1, $2, NULL, $3);

-- name: my-investments-many
-- A page of the user's live investments (cancelled ones are not listed), oldest first, for each of
-- many requests ($1 user ids, $2 page sizes). A request with a cursor ($3 microseconds since the
-- epoch, $4 investment id; NULL for a first page) gets the items after it. Each request is one
-- range scan of my_investment_item's primary key (index only: sql/migrations/012_my_investment_item.sql,
-- the read model kept with the ledger in the same transaction) for one item more than its page,
-- to know whether a next page exists: no join to the product and no look at the cancellations,
-- the item being stored rendered but for its date and id. For each request, in request order:
-- `found` (items read, at most page + 1), the cursor of the page's last item when the page is
-- full (0 and 0 when it is not: an investment id is never 0), and its response body: the page's
-- items (SPEC §3, `investment_id` last) as a JSON array, UTF-8.
-- The whole call answers ONE row: an array per figure and the bodies one after the other in one
-- bytea, `lengths` saying where each ends (service/batcher.py `pages` cuts them). psqlpy charges
-- its caller far more for rows that carry a body than for the same bytes in one value (100 ~40-item
-- pages a call: 3.0-3.7 ms of client CPU as rows, 0.8-1.0 ms as one row; docs/performance.md,
-- "thirteenth set"). bytea reaches Python as bytes, as is: a text column cost the service a decode
-- and an encode of every page. The date is rendered here, in the session's (display) time zone, by
-- a cast to text (the session's DateStyle is ISO: service/db.py `connection_options`), which costs
-- less than to_char() (docs/performance.md). string_agg() takes a page's items in the order the
-- inner query returns them (ORDER BY with LIMIT, nothing in between that reorders): an ORDER BY
-- inside that aggregate would sort every page again.
WITH page AS (
SELECT r.ord, p.found, coalesce(p.last_micros, 0) AS last_micros,
       coalesce(p.last_id, 0) AS last_id,
       convert_to('[' || coalesce(p.items, '') || ']', 'UTF8') AS body
FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[])
     WITH ORDINALITY AS r(user_id, page, after_micros, after_id, ord)
CROSS JOIN LATERAL (
    SELECT string_agg(u.item, ',') FILTER (WHERE u.n <= r.page) AS items,
           count(*) AS found,
           max((extract(epoch FROM u.invest_date) * 1000000)::bigint) FILTER (WHERE u.n = r.page)
               AS last_micros,
           max(u.investment_id) FILTER (WHERE u.n = r.page) AS last_id
    FROM (
        SELECT m.item || ',"invest_date":"' || date_trunc('second', m.invest_date::timestamp)::text
               || '","investment_id":' || m.investment_id::text || '}' AS item,
               m.invest_date, m.investment_id,
               row_number() OVER (ORDER BY m.invest_date, m.investment_id) AS n
        FROM my_investment_item m
        WHERE m.user_id = r.user_id
          AND (m.invest_date, m.investment_id)
              > (coalesce(timestamptz 'epoch' + r.after_micros * interval '1 microsecond',
                          '-infinity'),
                 coalesce(r.after_id, 0))
        ORDER BY m.invest_date, m.investment_id
        LIMIT r.page + 1
    ) u
) p
)
SELECT array_agg(found ORDER BY ord) AS found, array_agg(last_micros ORDER BY ord) AS last_micros,
       array_agg(last_id ORDER BY ord) AS last_id,
       array_agg(octet_length(body) ORDER BY ord) AS lengths,
       string_agg(body, ''::bytea ORDER BY ord) AS bodies
FROM page;

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
-- list-goods columns and its rules (category, min_amount, amount_unit, repaid; $6..$9, NULL: the
-- column's default).
WITH created AS (
    INSERT INTO investment_goods (title, total_investing_amount, status, started_at, finished_at,
                                  category, min_amount, amount_unit, repaid)
    VALUES ($1, $2, $3, $4, $5, coalesce($6, 'general'), coalesce($7, 1), coalesce($8, 1),
            coalesce($9, false))
    RETURNING investment_goods AS g
)
SELECT i.*, (c.g).category, (c.g).min_amount, (c.g).amount_unit, (c.g).repaid
FROM created c CROSS JOIN LATERAL goods_item(c.g, statement_timestamp()) i;

-- name: admin-goods-update
-- Changes product $1's title, total, period, status, category, min_amount, amount_unit and
-- repaid ($2..$10; NULL keeps the value) in one call: admin_change_goods()
-- (sql/functions/admin_limits.sql) locks the row, refuses a total below what is invested, an
-- inverted period, or a category or repaid change that would put an investor over a cap, and
-- moves the investors' positions when category or repaid change. The outcome, for a refusal the
-- cap, the number of users and the lowest user id, then the product as it is now (unchanged
-- when refused); no row at all: no such product.
SELECT c.outcome, c.cap, c.users, c.user_id, i.*, (c.product).category, (c.product).min_amount,
       (c.product).amount_unit, (c.product).repaid
FROM admin_change_goods($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) c
CROSS JOIN LATERAL goods_item(c.product, statement_timestamp()) i;

-- name: admin-goods-list
-- Every product with its rules, for `python -m service goods list`.
SELECT i.*, g.category, g.min_amount, g.amount_unit, g.repaid
FROM investment_goods g
CROSS JOIN LATERAL goods_item(g, statement_timestamp()) i
ORDER BY g.goods_id;

-- name: admin-investor
-- User $1's class, live positions (0 for a user never registered nor invested: general) and
-- the caps of the class.
SELECT u.user_id, l.investor_class, coalesce(i.invested_total, 0),
       coalesce(i.invested_real_estate, 0), l.per_product, l.total, l.real_estate
FROM (SELECT $1::bigint AS user_id) u
LEFT JOIN investor i ON i.user_id = u.user_id
JOIN investor_class_limit l ON l.investor_class = coalesce(i.investor_class, 'general');

-- name: admin-investor-set
-- Sets user $1's class to $2 (admin_set_investor_class(), sql/functions/admin_limits.sql): the
-- outcome ('changed' or 'limit_below_invested'), the cap it would break, then admin-investor's
-- columns as they are now.
SELECT s.outcome, s.cap, s.user_id, l.investor_class, s.invested_total, s.invested_real_estate,
       l.per_product, l.total, l.real_estate
FROM admin_set_investor_class($1, $2) s
JOIN investor_class_limit l ON l.investor_class = s.investor_class;

-- name: admin-limits
-- Every class's caps (NULL: none), general first.
SELECT investor_class, per_product, total, real_estate,
       to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS')
FROM investor_class_limit
ORDER BY array_position(ARRAY['general', 'qualified', 'professional'], investor_class);

-- name: admin-limits-set
-- Sets class $1's caps to $2..$4 (NULL: none) unless a user of the class is over one of them
-- (admin_set_class_limits(), sql/functions/admin_limits.sql): the outcome, for a refusal the cap,
-- the number of users over it and the lowest user id, then the class's caps as they are now.
SELECT outcome, cap, users, user_id, investor_class, per_product, total, real_estate,
       to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS')
FROM admin_set_class_limits($1, $2, $3, $4);

-- name: relay-lock
-- The outbox relay (service/relay.py), on its own session. Its lock: the two-key form of the
-- advisory locks, a key space the single-key locks of invest_many's idempotency keys never use.
-- Released when the session ends, so a relay whose process or connection dies hands over.
SELECT pg_try_advisory_lock(7202104, 25);

-- name: relay-round
-- One round of the relay; $1: the last event_id JetStream holds, $2: how many events to answer.
-- Deletes what JetStream holds (the rounds it holds wholly, and the outbox rows whose every event
-- is at most $1); when no numbered event is left after $1, numbers every outbox row this
-- statement can see that no round holds - each one committed - in `seq` order after the last
-- number handed out, as one round, a row's events in their array order (docs/reliability.md:
-- event_id order is commit order; sql/migrations/014_outbox_calls.sql: a row holds a call's
-- events, and a round's `ends` where each row's events end); answers the rows holding the first
-- $2 events after $1, in event_id order: each row's first event_id, type, `at` (in the display
-- time zone, as the API shows it, by a cast to text: the session's DateStyle is ISO, service/db.py
-- `connection_options`), recorded_at in epoch seconds and its events' columns as arrays, which
-- the relay renders as it publishes them (service/relay.py `events_of`; docs/api.md "Events").
-- Writes nothing when there is nothing to delete or number.
-- Rows are found by the `xid` index from the oldest transaction that can matter
-- (sql/migrations/013_outbox_rounds.sql): a round's rows from its low_xid, new rows from the
-- oldest transaction running at the last numbering; never by a scan of the whole outbox.
WITH stored_rounds AS (
    DELETE FROM investment_event_round r
    WHERE r.last_event_id <= $1
), stored_rows AS (
    DELETE FROM investment_event e
    WHERE e.xid >= (SELECT min(r.low_xid) FROM investment_event_round r
                    WHERE r.first_event_id <= $1)
      AND e.seq IN (SELECT u.seq
                    FROM investment_event_round r, unnest(r.seqs, r.ends) AS u(seq, e_end)
                    WHERE r.first_event_id <= $1 AND r.first_event_id + u.e_end - 1 <= $1)
), pending AS (
    -- Numbered, not yet in JetStream: a round answered in parts, or published again. The rows
    -- holding each round's first $2 events after $1 (after its start, if $1 is before it), and
    -- the event_id of each one's first event.
    SELECT r.first_event_id + coalesce(r.ends[(u.n - 1)::integer], 0) AS first_id, u.seq
    FROM investment_event_round r,
         unnest(r.seqs, r.ends) WITH ORDINALITY AS u(seq, e_end, n)
    WHERE r.last_event_id > $1
      AND r.first_event_id + u.e_end - 1 > $1
      AND r.first_event_id + coalesce(r.ends[(u.n - 1)::integer], 0)
          <= greatest($1, r.first_event_id - 1) + $2
), fresh AS (
    SELECT e.*, cardinality(e.investment_ids) AS n
    FROM investment_event e
    WHERE NOT EXISTS (SELECT 1 FROM investment_event_round r WHERE r.last_event_id > $1)
      AND e.xid >= (SELECT relay_floor(c.numbered_xmin) FROM investment_event_relay c)
      AND e.seq NOT IN (SELECT unnest(r.seqs) FROM investment_event_round r)
), counter AS (
    UPDATE investment_event_relay c
    SET last_event_id = c.last_event_id + (SELECT sum(f.n) FROM fresh f),
        numbered_xmin = pg_snapshot_xmin(pg_current_snapshot())
    WHERE EXISTS (SELECT 1 FROM fresh)
    RETURNING c.last_event_id - (SELECT sum(f.n) FROM fresh f) AS base
), numbered AS (
    -- e_end: the round's events up to this row's last.
    SELECT c.base, sum(f.n) OVER (ORDER BY f.seq) AS e_end, f.*
    FROM fresh f, counter c
), round AS (
    INSERT INTO investment_event_round (first_event_id, last_event_id, seqs, ends, low_xid)
    SELECT min(nb.base) + 1, min(nb.base) + max(nb.e_end), array_agg(nb.seq ORDER BY nb.seq),
           array_agg(nb.e_end::integer ORDER BY nb.seq), min(nb.xid)
    FROM numbered nb
    HAVING count(*) > 0

)
-- The rows whose events are answered, in event_id order: each one's first event's event_id, its
-- type, `at` and recorded_at (a row's events share them: rendered here, once a row), and its
-- events' columns as arrays. The relay renders the events (service/relay.py `events_of`), those
-- up to $1 left out (in JetStream already), up to $2 of them.
SELECT a.first_id, a.type, date_trunc('second', a.at::timestamp)::text,
       extract(epoch FROM a.recorded_at)::float8, a.investment_ids, a.user_ids, a.goods_ids,
       a.amounts, a.current_investing_amounts, a.investor_counts
FROM (SELECT p.first_id, e.type, e.at, e.recorded_at, e.investment_ids, e.user_ids,
             e.goods_ids, e.amounts, e.current_investing_amounts, e.investor_counts
      FROM pending p
      JOIN investment_event e ON e.seq = p.seq
      WHERE e.xid >= (SELECT min(r.low_xid) FROM investment_event_round r
                      WHERE r.last_event_id > $1)
      UNION ALL
      SELECT nb.base + nb.e_end - nb.n + 1, nb.type, nb.at, nb.recorded_at, nb.investment_ids,
             nb.user_ids, nb.goods_ids, nb.amounts, nb.current_investing_amounts,
             nb.investor_counts
      FROM numbered nb
      WHERE nb.e_end - nb.n < $2) a
ORDER BY a.first_id;

-- name: relay-announce
-- The active relay says it runs: invest_many() writes the outbox while this is recent. Answers
-- this database's stream key.
UPDATE investment_event_relay SET seen_at = statement_timestamp() RETURNING stream_key::text;

-- name: relay-counter
-- The last event_id handed out.
SELECT last_event_id FROM investment_event_relay;

-- name: relay-backlog
-- The events not yet acknowledged by JetStream (those of a row of which JetStream holds a part
-- count too, until it holds the row's last), and the age in seconds of the oldest (NULL: none).
-- Every row not yet deleted was written at or after the oldest transaction that can matter
-- (relay-round): rows not numbered yet from the last numbering's xmin on, the rows of a round
-- from its low_xid on; so the `xid` index reads the recent rows only, not the outbox's dead ones.
SELECT coalesce(sum(cardinality(e.investment_ids)), 0),
       extract(epoch FROM clock_timestamp() - min(e.recorded_at))::float8
FROM investment_event e
WHERE e.xid >= (SELECT relay_floor(least(c.numbered_xmin, (SELECT min(r.low_xid)
                                                           FROM investment_event_round r)))
                FROM investment_event_relay c);

-- name: outbox-abandon
-- Housekeeping: no relay has said it runs for $1 hours (NATS_URL was taken away), so events are
-- no longer written, and the outbox is emptied 10,000 rows at a time (its numbering rounds at
-- once: their numbers stay handed out). The number of events deleted (10,000 rows hold at least
-- as many: a chunk that deleted fewer was the last).
WITH off AS (
    UPDATE investment_event_relay
    SET seen_at = NULL
    WHERE seen_at < statement_timestamp() - make_interval(hours => $1)
    RETURNING 1
), rounds AS (
    DELETE FROM investment_event_round
    WHERE EXISTS (SELECT 1 FROM off)
       OR EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NULL)
), gone AS (
    DELETE FROM investment_event
    WHERE ctid IN (SELECT ctid FROM investment_event LIMIT 10000)
      AND (EXISTS (SELECT 1 FROM off)
           OR EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NULL))
    RETURNING cardinality(investment_ids) AS events
)
SELECT coalesce(sum(events), 0) FROM gone;
