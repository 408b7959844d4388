-- Invests a batch of requests for any products, and answers one row per request in array order.
--
-- One call is one transaction. Keys first: each Idempotency-Key is try-locked (a transaction-scoped
-- advisory lock on user and key that never waits), so a key in flight anywhere is 'in_use'; a key
-- already answered is a 'replay' (same product and amount, answered with the stored answer read in
-- that same statement, so a cleanup deleting the key meanwhile changes nothing) or a 'mismatch'.
-- Then the products that new requests need are locked in ascending goods_id order, the same order
-- in every worker and instance, so calls never deadlock.
--
-- How products are locked depends on p_lock_wait_ms. NULL (the service's shared call): a wait of
-- at most 50 ms per row (other calls of the service hold a row for milliseconds), then SKIP
-- LOCKED, so a product row held longer elsewhere (an operator's transaction, a stuck call)
-- delays this call by that much at most; that product's requests are answered 'skipped' with
-- nothing done, and the service hands them to a call of their own. A number (that call): the products are
-- waited for, at most that many milliseconds (then the statement fails with a lock timeout and
-- nothing is done).
--
-- Each locked product's requests are granted first come, first served in array order: the
-- request that crosses the total gets the remainder, later ones 0. Every positive grant becomes
-- exactly one ledger row, each product's counters move by exactly what its ledger rows add up to,
-- and a keyed request's answer is stored with them.
--
-- p_keys: each request's Idempotency-Key (NULL: none; the whole array may be NULL). p_at: the
-- moment the states are judged at (NULL: now; tests pass a fixed clock). `outcome` is 'done'
-- (performed now), 'replay' (the stored answer of an earlier request with this key), 'in_use',
-- 'mismatch' or 'skipped' (nothing done; the other columns NULL). `found` is false for an unknown
-- product.
DROP FUNCTION IF EXISTS invest_many(bigint[], bigint[], bigint[], text[], timestamptz);

CREATE OR REPLACE FUNCTION invest_many(
    p_goods_ids bigint[], p_user_ids bigint[], p_amounts bigint[], p_keys text[],
    p_at timestamptz DEFAULT NULL, p_lock_wait_ms integer DEFAULT NULL
)
RETURNS TABLE (
    ord bigint, outcome text, found boolean,
    total_investing_amount bigint, investment_amount bigint, current_investing_amount bigint,
    state text, invest_date text, investment_id bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now     timestamptz := coalesce(p_at, statement_timestamp());
    v_date    text := to_char(v_now, 'YYYY-MM-DD HH24:MI:SS');
    v_outcome text[];
    v_stored  investment_idempotency[];  -- a replay's stored answer, read with its outcome
    v_wanted  bigint[];  -- the products new requests need
    v_locked  bigint[];  -- of those, the ones this call holds
    v_held    bigint[];  -- existing products held elsewhere (SKIP LOCKED passed them over)
    v_lock_timeout text;
    v_until   timestamptz;
BEGIN
    IF p_keys IS NULL THEN
        v_outcome := array_fill('done'::text, ARRAY[cardinality(p_user_ids)]);
    ELSE
        -- The same key twice in one batch: the later one is in use.
        SELECT array_agg(CASE WHEN r.key IS NULL THEN 'done'
                              WHEN r.nth > 1 THEN 'in_use'
                              WHEN pg_try_advisory_xact_lock(
                                       hashtextextended(r.user_id::text || ':' || r.key, 0))
                                  THEN 'done'
                              ELSE 'in_use' END ORDER BY r.ord)
        INTO v_outcome
        FROM (SELECT u.*, row_number() OVER (PARTITION BY u.user_id, u.key ORDER BY u.ord) AS nth
              FROM unnest(p_user_ids, p_keys) WITH ORDINALITY AS u(user_id, key, ord)) r;
        -- A new statement, so a new snapshot: it sees every answer committed before the locks.
        SELECT array_agg(CASE WHEN r.outcome <> 'done' OR k.user_id IS NULL THEN r.outcome
                              WHEN k.goods_id = r.goods_id AND k.requested_amount = r.amount
                                  THEN 'replay'
                              ELSE 'mismatch' END ORDER BY r.ord),
               array_agg(CASE WHEN r.outcome = 'done' THEN k END ORDER BY r.ord)
        INTO v_outcome, v_stored
        FROM unnest(p_goods_ids, p_user_ids, p_amounts, p_keys, v_outcome)
             WITH ORDINALITY AS r(goods_id, user_id, amount, key, outcome, ord)
        LEFT JOIN investment_idempotency k
               ON r.key IS NOT NULL AND k.user_id = r.user_id AND k.idempotency_key = r.key;
    END IF;

    -- Only new requests need their product; replays and refusals never wait for a row lock.
    SELECT array_agg(DISTINCT r.goods_id) INTO v_wanted
    FROM unnest(p_goods_ids, v_outcome) AS r(goods_id, outcome)
    WHERE r.outcome = 'done';
    IF p_lock_wait_ms IS NULL THEN
        -- Other calls of the service (another worker's, another instance's) hold a product for
        -- milliseconds: wait for them, at most 50 ms for each row (one try, in a
        -- subtransaction). A row held longer (an operator's session, a call waiting on
        -- something) makes that try fail; then the call locks what it can (SKIP LOCKED) and
        -- passes the rest over.
        v_lock_timeout := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            PERFORM 1 FROM investment_goods g WHERE g.goods_id = ANY (v_wanted)
            ORDER BY g.goods_id FOR UPDATE;
            v_locked := v_wanted;
        EXCEPTION WHEN lock_not_available THEN
            SELECT array_agg(l.goods_id) INTO v_locked
            FROM (SELECT g.goods_id FROM investment_goods g WHERE g.goods_id = ANY (v_wanted)
                  ORDER BY g.goods_id FOR UPDATE SKIP LOCKED) l;
            -- A plain read never waits: the products that exist but were passed over.
            SELECT array_agg(g.goods_id) INTO v_held
            FROM investment_goods g
            WHERE g.goods_id = ANY (v_wanted)
              AND NOT g.goods_id = ANY (coalesce(v_locked, '{}'));
        END;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
        IF v_held IS NOT NULL THEN
            SELECT array_agg(CASE WHEN r.outcome = 'done' AND r.goods_id = ANY (v_held)
                                  THEN 'skipped' ELSE r.outcome END ORDER BY r.ord)
            INTO v_outcome
            FROM unnest(p_goods_ids, v_outcome) WITH ORDINALITY AS r(goods_id, outcome, ord);
            v_wanted := v_locked;
        END IF;
    ELSE
        -- lock_timeout bounds each lock a statement waits for, and a row held elsewhere can
        -- take two waits (the tuple lock behind other waiters, then the holder's transaction):
        -- so each attempt gets half of what is left, and a timed-out attempt is tried again
        -- until the whole wait is spent.
        v_lock_timeout := current_setting('lock_timeout');
        v_until := clock_timestamp() + p_lock_wait_ms * interval '1 millisecond';
        LOOP
            PERFORM set_config(
                'lock_timeout',
                greatest(1, (extract(epoch FROM v_until - clock_timestamp()) * 500)::integer)
                    || 'ms',
                true);
            BEGIN
                PERFORM 1 FROM investment_goods g WHERE g.goods_id = ANY (v_wanted)
                ORDER BY g.goods_id FOR UPDATE;
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                IF clock_timestamp() >= v_until THEN
                    RAISE;
                END IF;
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;

    -- The rows are locked: this statement's snapshot holds their latest values. A product's
    -- cumulative grant after request i is least(remaining, what it and the earlier ones asked).
    RETURN QUERY
    WITH requested AS (
        SELECT r.ord, r.goods_id, r.user_id, r.key, r.outcome, r.amount AS asked,
               g.goods_id IS NOT NULL AS found, g.total_investing_amount AS total,
               g.current_investing_amount AS before, g.category, g.repaid,
               g.investor_count AS investors_before,
               CASE WHEN g.goods_id IS NOT NULL
                    THEN goods_state(g.status, g.current_investing_amount,
                                     g.total_investing_amount, g.started_at, g.finished_at, v_now)
               END AS state_before
        FROM unnest(p_goods_ids, p_user_ids, p_amounts, coalesce(p_keys, '{}'), v_outcome)
             WITH ORDINALITY AS r(goods_id, user_id, amount, key, outcome, ord)
        -- `= ANY (v_wanted)` (here and in counters) adds no condition, but lets the generic plan
        -- probe the primary key instead of scanning every product.
        LEFT JOIN investment_goods g
               ON r.outcome = 'done' AND g.goods_id = r.goods_id AND g.goods_id = ANY (v_wanted)
    ), eligible AS (
        SELECT q.*,
               (q.total - q.before)::numeric AS remaining,
               CASE WHEN q.state_before = 'recruiting' THEN q.asked ELSE 0 END::numeric AS e
        FROM requested q
    ), summed AS (
        SELECT q.*, sum(q.e) OVER (PARTITION BY q.goods_id ORDER BY q.ord) AS asked_so_far
        FROM eligible q
    ), granted AS (
        SELECT q.*,
               (least(q.remaining, q.asked_so_far) - least(q.remaining, q.asked_so_far - q.e))
                   ::bigint AS granted,
               q.before + least(q.remaining, q.asked_so_far)::bigint AS current
        FROM summed q
    ), results AS (
        -- Ledger ids in arrival order.
        SELECT q.*, CASE WHEN q.granted > 0 THEN nextval('user_investment_goods_id_seq') END AS id,
               CASE WHEN NOT q.found OR q.state_before <> 'recruiting' THEN q.state_before
                    WHEN q.current >= q.total THEN 'sold_out'
                    ELSE 'recruiting' END AS state
        FROM (SELECT * FROM granted ORDER BY ord) q
    ), ledger AS (
        INSERT INTO user_investment_goods (id, user_id, goods_id, user_investing_amount, invest_date)
        SELECT r.id, r.user_id, r.goods_id, r.granted, v_now FROM results r WHERE r.granted > 0
        RETURNING goods_id, user_id
    ), held AS (
        SELECT r.goods_id, r.user_id, sum(r.granted)::bigint AS granted
        FROM results r WHERE r.granted > 0 GROUP BY r.goods_id, r.user_id
    ), holdings AS (
        -- The user's live amount in the product (guarded by the product's lock). A user whose
        -- amount was 0 (none yet, or every investment cancelled) becomes one of its investors.
        INSERT INTO investment_goods_investor AS i (goods_id, user_id, amount)
        SELECT h.goods_id, h.user_id, h.granted FROM held h ORDER BY h.goods_id, h.user_id
        ON CONFLICT (goods_id, user_id) DO UPDATE SET amount = i.amount + excluded.amount
        RETURNING i.goods_id, i.user_id, i.amount
    ), new_investors AS (
        SELECT h.goods_id FROM holdings h
        JOIN held n ON n.goods_id = h.goods_id AND n.user_id = h.user_id
        WHERE h.amount = n.granted
    ), positions AS (
        -- Each user's live amounts over products not repaid, in user_id order.
        INSERT INTO investor AS v (user_id, invested_total, invested_real_estate)
        SELECT r.user_id, sum(r.granted)::bigint,
               coalesce(sum(r.granted) FILTER (WHERE r.category = 'real_estate'), 0)::bigint
        FROM results r WHERE r.granted > 0 AND NOT r.repaid
        GROUP BY r.user_id ORDER BY r.user_id
        ON CONFLICT (user_id) DO UPDATE
        SET invested_total = v.invested_total + excluded.invested_total,
            invested_real_estate = v.invested_real_estate + excluded.invested_real_estate
    ), counters AS (
        -- Runs exactly once whether or not the final SELECT reads it (data-modifying WITH).
        UPDATE investment_goods g
        SET current_investing_amount = g.current_investing_amount + m.granted,
            investor_count = g.investor_count + coalesce(n.investors, 0)
        FROM (SELECT r.goods_id, sum(r.granted)::bigint AS granted
              FROM results r WHERE r.granted > 0 GROUP BY r.goods_id) m
        LEFT JOIN (SELECT n.goods_id, count(*)::integer AS investors
                   FROM new_investors n GROUP BY n.goods_id) n ON n.goods_id = m.goods_id
        WHERE g.goods_id = m.goods_id AND g.goods_id = ANY (v_wanted)
    ), events AS (
        -- The outbox (sql/migrations/011_outbox.sql), while a relay is configured: one event per
        -- ledger row, with the product's counters right after it. A newcomer is a user's first
        -- ledger row of this call in a product where the user holds nothing live yet (no
        -- investment, or every one cancelled): what new_investors counts. Rows go in in array
        -- order, so `seq` follows it.
        INSERT INTO investment_event (type, investment_id, user_id, goods_id, amount, at,
                                      current_investing_amount, investor_count)
        SELECT 'accepted', e.id, e.user_id, e.goods_id, e.granted, v_now, e.current,
               e.investors_before + count(*) FILTER (WHERE e.newcomer)
                   OVER (PARTITION BY e.goods_id ORDER BY e.ord)
        FROM (SELECT r.*,
                     row_number() OVER (PARTITION BY r.goods_id, r.user_id ORDER BY r.ord) = 1
                     AND NOT EXISTS (SELECT 1 FROM investment_goods_investor i
                                     WHERE i.goods_id = r.goods_id AND i.user_id = r.user_id
                                       AND i.amount > 0)
                         AS newcomer
              FROM results r
              WHERE r.granted > 0) e
        WHERE EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NOT NULL)
        ORDER BY e.ord
    ), remembered AS (
        INSERT INTO investment_idempotency (
            user_id, idempotency_key, goods_id, requested_amount, found, total_investing_amount,
            investment_amount, current_investing_amount, state, invest_date, investment_id,
            created_at)
        SELECT r.user_id, r.key, r.goods_id, r.asked, r.found, r.total, r.granted, r.current,
               r.state, v_date, r.id, v_now
        FROM results r
        WHERE r.key IS NOT NULL AND r.outcome = 'done'
    )
    -- The answers: performed now, replayed from the stored answer, or refused (nothing else).
    SELECT r.ord, r.outcome, r.found, r.total, r.granted, r.current, r.state, v_date, r.id
    FROM results r
    WHERE r.outcome = 'done'
    UNION ALL
    SELECT r.ord, r.outcome, (v_stored[r.ord]).found, (v_stored[r.ord]).total_investing_amount,
           (v_stored[r.ord]).investment_amount, (v_stored[r.ord]).current_investing_amount,
           (v_stored[r.ord]).state, (v_stored[r.ord]).invest_date, (v_stored[r.ord]).investment_id
    FROM results r
    WHERE r.outcome = 'replay'
    UNION ALL
    SELECT r.ord, r.outcome, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM results r
    WHERE r.outcome IN ('in_use', 'mismatch', 'skipped')
    ORDER BY 1;
END $$;
