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
-- at most 50 ms per row (two lock waits of 25 ms at most), repeated while every row it still
-- lacks is held by another call of the service (a transaction holding the limits lock shared: it
-- holds a row for milliseconds, tens on a loaded machine) for at most 500 ms in all; then SKIP
-- LOCKED, so a product row held elsewhere (an operator's transaction) delays this call by 50 ms
-- at most; that product's requests are answered 'skipped' with nothing done, and the service
-- hands them to a call of their own. A number (that call): the products are waited for, at most
-- that many milliseconds (then the statement fails with a lock timeout and nothing is done).
-- Either way the locks are taken by the same transaction id that then updates the rows (the
-- wait's subtransaction does the writes too), so a call makes no MultiXact
-- (tests/integration/test_multixact.py).
--
-- Each locked product's requests are granted first come, first served in array order: the
-- request that crosses the total gets the remainder, later ones 0. Every positive grant becomes
-- exactly one ledger row, each product's counters move by exactly what its ledger rows add up to,
-- and a keyed request's answer is stored with them.
--
-- Investor caps (docs/reliability.md "Investor caps"): the call first takes the limits lock
-- (limits_lock_key()) shared, so no cap, class or product rule changes while it decides; then the
-- products; then its users' investor rows in ascending user_id (in the statement that adds their
-- totals). A request whose grant exceeds its user's room is refused ('limit': nothing written,
-- `refused` names the binding cap and `refused_value` the room left, possibly 0), and the answers
-- are those of the requests served one by one in array order. An amount below the
-- product's min_amount or not a multiple of its amount_unit is 'invalid_amount' (`refused` names
-- the rule, `refused_value` its value).
--
-- p_keys: each request's Idempotency-Key (NULL: none; the whole array may be NULL). p_at: the
-- moment the states are judged at (NULL: now; tests pass a fixed clock). `outcome` is 'done'
-- (performed now), 'replay' (the stored answer of an earlier request with this key), 'in_use',
-- 'mismatch' or 'skipped' (nothing done; the other columns NULL), 'limit' or 'invalid_amount'
-- (nothing done, see above). `found` is false for an unknown product.
DROP FUNCTION IF EXISTS invest_many(bigint[], bigint[], bigint[], text[], timestamptz);
DROP FUNCTION IF EXISTS invest_many(bigint[], bigint[], bigint[], text[], timestamptz, integer);
DROP FUNCTION IF EXISTS invest_many_apply(bigint[], bigint[], bigint[], text[], text[],
                                          investment_idempotency[], bigint[], timestamptz, text);

CREATE OR REPLACE FUNCTION invest_many(
    p_goods_ids bigint[], p_user_ids bigint[], p_amounts bigint[], p_keys text[],
    p_at timestamptz DEFAULT NULL, p_lock_wait_ms integer DEFAULT NULL
)
RETURNS TABLE (
    ord bigint, outcome text, found boolean,
    total_investing_amount bigint, investment_amount bigint, current_investing_amount bigint,
    state text, invest_date text, investment_id bigint, refused text, refused_value bigint
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
    v_applying boolean := false;
    v_error   text;
BEGIN
    -- First of all: no cap, class or product rule changes until this call commits.
    PERFORM pg_advisory_xact_lock_shared(limits_lock_key());
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
    -- The product rows are locked and updated by one and the same transaction id. A row lock
    -- taken inside a subtransaction (a BEGIN ... EXCEPTION block) and then updated by its parent
    -- would make PostgreSQL record both ids in a MultiXact, on every call: SLRU and WAL work,
    -- and multixact-age vacuums sooner. So the bounded wait, the locks and every write of the
    -- call run inside the same block; only a lock timeout in the wait itself is caught (the
    -- writes are answered outside the block's handler: v_applying), and then nothing of the
    -- block is left (its locks are released with it) and the call locks at the top level what
    -- it can without waiting.
    v_lock_timeout := current_setting('lock_timeout');
    -- lock_timeout bounds each lock a statement waits for, and a row held elsewhere can take
    -- two waits: the row's tuple lock, held by a call that waits for the row already, then the
    -- holder's transaction.
    -- NULL (the shared call): other calls of the service (another worker's, another instance's)
    -- hold a product for milliseconds: wait for them, at most 50 ms for each row, so 25 ms a
    -- wait (with 50 ms each, a call that came 5 ms after another took about 100 ms to pass over
    -- a row an operator held). A row held longer makes that wait fail. While no row is held by
    -- anything but such calls (a loaded machine, where a call lasts longer), wait again, up to
    -- 500 ms in all: passing a product over sends its requests to slower calls of their own. A
    -- row held by another transaction (an operator's session) ends the wait: the call locks
    -- what it can (SKIP LOCKED) and passes the rest over.
    -- A number (a held product's own call): each attempt gets half of what is left, and a
    -- timed-out attempt is tried again until the whole wait is spent.
    v_until := clock_timestamp() + coalesce(p_lock_wait_ms, 500) * interval '1 millisecond';
    LOOP
        BEGIN
            PERFORM set_config(
                'lock_timeout',
                CASE WHEN p_lock_wait_ms IS NULL THEN 25
                     ELSE greatest(1, (extract(epoch FROM v_until - clock_timestamp()) * 500)
                                          ::integer)
                END || 'ms',
                true);
            PERFORM 1 FROM investment_goods g WHERE g.goods_id = ANY (v_wanted)
            ORDER BY g.goods_id FOR UPDATE;
            PERFORM set_config('lock_timeout', v_lock_timeout, true);
            v_applying := true;
            RETURN QUERY
            SELECT * FROM invest_many_apply(p_goods_ids, p_user_ids, p_amounts, p_keys,
                                            v_outcome, v_stored, v_wanted, v_now, v_date);
            EXIT;
        EXCEPTION WHEN lock_not_available OR query_canceled THEN
            -- PostgreSQL can report a lock timeout as a cancel "due to user request": a timeout
            -- that fires as its wait is granted stays pending, and the row's second wait (its
            -- holder's transaction after its tuple lock) clears the mark that names it. Seen
            -- under pgbench at 50 clients of 10-product calls on PostgreSQL 18.6, where nothing
            -- sent a cancel (3 in 4 minutes; docs/reliability.md). So a cancel that ends the
            -- wait for the rows ends only that wait, as a timeout does; a statement timeout, a
            -- cancel message in another language, and anything that comes during the writes
            -- end the call as before.
            GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
            IF v_applying OR (p_lock_wait_ms IS NOT NULL AND clock_timestamp() >= v_until)
               OR (SQLSTATE = '57014'
                   AND v_error IS DISTINCT FROM 'canceling statement due to user request') THEN
                RAISE;
            END IF;
            CONTINUE WHEN p_lock_wait_ms IS NOT NULL;
            -- Who holds the rows: each row's locker (its xmax) still in progress, and whether
            -- that backend holds the limits lock shared (a call of the service) or not. A
            -- plain read never waits; a locker this cannot name (a MultiXact) counts as a call.
            CONTINUE WHEN clock_timestamp() < v_until AND NOT EXISTS (
                SELECT 1
                FROM investment_goods g
                JOIN pg_locks x ON x.locktype = 'transactionid' AND x.transactionid = g.xmax
                               AND x.granted AND x.pid <> pg_backend_pid()
                WHERE g.goods_id = ANY (v_wanted) AND g.xmax <> '0'::xid
                  AND NOT EXISTS (
                      SELECT 1 FROM pg_locks a
                      WHERE a.pid = x.pid AND a.locktype = 'advisory' AND a.granted
                        AND a.mode = 'ShareLock' AND a.objsubid = 1
                        AND a.classid = (limits_lock_key() >> 32)::oid
                        AND a.objid = (limits_lock_key() & 4294967295)::oid));
            -- Top level: these locks belong to the transaction itself, as its writes will.
            SELECT array_agg(l.goods_id) INTO v_locked
            FROM (SELECT g.goods_id FROM investment_goods g WHERE g.goods_id = ANY (v_wanted)
                  ORDER BY g.goods_id FOR UPDATE SKIP LOCKED) l;
            -- A plain read never waits: the products that exist but were passed over.
            SELECT array_agg(g.goods_id) INTO v_held
            FROM investment_goods g
            WHERE g.goods_id = ANY (v_wanted)
              AND NOT g.goods_id = ANY (coalesce(v_locked, '{}'));
            IF v_held IS NOT NULL THEN
                SELECT array_agg(CASE WHEN r.outcome = 'done' AND r.goods_id = ANY (v_held)
                                      THEN 'skipped' ELSE r.outcome END ORDER BY r.ord)
                INTO v_outcome
                FROM unnest(p_goods_ids, v_outcome) WITH ORDINALITY AS r(goods_id, outcome, ord);
                v_wanted := v_locked;
            END IF;
            RETURN QUERY
            SELECT * FROM invest_many_apply(p_goods_ids, p_user_ids, p_amounts, p_keys,
                                            v_outcome, v_stored, v_wanted, v_now, v_date);
            EXIT;
        END;
    END LOOP;
END $$;

-- The answers and the writes of an invest_many() call whose products (v_wanted) the caller has
-- locked; v_outcome and v_stored as the caller found them (keys). Runs in the transaction (or
-- subtransaction) that holds the product locks, so each row is locked and written by one id.
CREATE OR REPLACE FUNCTION invest_many_apply(
    p_goods_ids bigint[], p_user_ids bigint[], p_amounts bigint[], p_keys text[],
    v_outcome text[], v_stored investment_idempotency[], v_wanted bigint[], v_now timestamptz,
    v_date text
)
RETURNS TABLE (
    ord bigint, outcome text, found boolean,
    total_investing_amount bigint, investment_amount bigint, current_investing_amount bigint,
    state text, invest_date text, investment_id bigint, refused text, refused_value bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_decided boolean := false;  -- the grants below were decided one by one
    v_granted bigint[];          -- each request's grant
    v_refused text[];            -- each refused request's cap or rule
    v_value   bigint[];          -- and the room left, or the rule's value
    v_over    boolean;           -- the set-wise grants put a user over a cap: nothing written
    -- Some class has a cap (read once; the limits lock keeps caps and classes as they are).
    v_caps    boolean := EXISTS (SELECT 1 FROM investor_class_limit c
                                 WHERE c.per_product IS NOT NULL OR c.total IS NOT NULL
                                    OR c.real_estate IS NOT NULL);
    -- The answers, one element per request.
    a_found boolean[]; a_total bigint[]; a_current bigint[]; a_state text[]; a_id bigint[];
    a_investors integer[];  -- each request's product's investor_count before the call
    a_newcomers bigint[];   -- the requests that made their user an investor of the product
    -- The serial decision. Slots: l_p a product, l_q a (product, user), l_u a user, numbered
    -- within the call.
    l_e bigint[]; l_rem bigint[]; l_p integer[]; l_q integer[]; l_u integer[];
    l_pp bigint[]; l_tot bigint[]; l_re bigint[]; l_amt bigint[]; l_inv bigint[];
    l_inv_re bigint[]; l_counts boolean[]; l_real boolean[];
    s_rem bigint[] := '{}'; s_amt bigint[] := '{}'; s_tot bigint[] := '{}'; s_re bigint[] := '{}';
    v_g bigint; v_room bigint; v_cap text; v_i integer;
BEGIN
    LOOP  -- once, or twice when the set-wise grants would put a user over a cap
        -- The products are locked: this statement's snapshot holds their latest values.
        WITH requested AS (
            SELECT r.ord, r.goods_id, r.user_id, r.key, r.outcome, r.amount AS asked,
                   g.goods_id IS NOT NULL AS found, g.total_investing_amount AS total,
                   g.current_investing_amount AS before, g.category, g.repaid,
                   g.investor_count AS investors_before,
                   CASE WHEN g.goods_id IS NULL THEN NULL
                        WHEN r.amount < g.min_amount THEN 'min_amount'
                        WHEN r.amount % g.amount_unit <> 0 THEN 'amount_unit'
                   END AS bad_rule,
                   CASE WHEN r.amount < g.min_amount THEN g.min_amount ELSE g.amount_unit END
                       AS rule_value,
                   CASE WHEN g.goods_id IS NOT NULL
                        THEN goods_state(g.status, g.current_investing_amount,
                                         g.total_investing_amount, g.started_at, g.finished_at,
                                         v_now)
                   END AS state_before
            FROM unnest(p_goods_ids, p_user_ids, p_amounts, coalesce(p_keys, '{}'), v_outcome)
                 WITH ORDINALITY AS r(goods_id, user_id, amount, key, outcome, ord)
            -- `= ANY (v_wanted)` (here and in counters) adds no condition, but lets the generic
            -- plan probe the primary key instead of scanning every product.
            LEFT JOIN investment_goods g
                   ON r.outcome IN ('done', 'limit', 'invalid_amount')
                      AND g.goods_id = r.goods_id AND g.goods_id = ANY (v_wanted)
        ), eligible AS (
            SELECT q.*,
                   (q.total - q.before)::numeric AS remaining,
                   CASE WHEN q.outcome = 'done' AND q.bad_rule IS NULL
                             AND q.state_before = 'recruiting'
                        THEN q.asked ELSE 0 END::numeric AS e
            FROM requested q
        ), summed AS (
            SELECT q.*, sum(q.e) OVER (PARTITION BY q.goods_id ORDER BY q.ord) AS asked_so_far
            FROM eligible q
        ), granted AS (
            -- Set-wise: a product's cumulative grant after request i is least(remaining, what
            -- it and the earlier ones asked). Or the serial decision, once made.
            SELECT q.*,
                   CASE WHEN q.outcome = 'done' AND q.bad_rule IS NOT NULL THEN 'invalid_amount'
                        ELSE q.outcome END AS answer,
                   CASE WHEN v_decided THEN v_granted[q.ord::integer]
                        ELSE (least(q.remaining, q.asked_so_far)
                              - least(q.remaining, q.asked_so_far - q.e))::bigint
                   END AS granted,
                   CASE WHEN v_decided AND q.outcome = 'limit' THEN v_refused[q.ord::integer]
                        ELSE q.bad_rule END AS refused,
                   CASE WHEN v_decided AND q.outcome = 'limit' THEN v_value[q.ord::integer]
                        WHEN q.bad_rule IS NOT NULL THEN q.rule_value END AS refused_value
            FROM summed q
        ), results AS (
            -- Ledger ids in arrival order.
            SELECT q.*,
                   CASE WHEN q.granted > 0 THEN nextval('user_investment_goods_id_seq') END AS id,
                   CASE WHEN NOT q.found OR q.state_before <> 'recruiting' THEN q.state_before
                        WHEN q.current >= q.total THEN 'sold_out'
                        ELSE 'recruiting' END AS state
            FROM (SELECT q.*,
                         q.before + sum(q.granted) OVER (PARTITION BY q.goods_id ORDER BY q.ord)
                             ::bigint AS current
                  FROM granted q ORDER BY q.ord) q
        ), people AS (
            -- The users of the call's grants, with the live totals this call adds; with caps,
            -- every user of its new requests (a request granted nothing set-wise may be granted
            -- something when they are decided one by one: its user's row must be locked too).
            SELECT r.user_id,
                   coalesce(sum(r.granted) FILTER (WHERE NOT r.repaid), 0) AS total,
                   coalesce(sum(r.granted) FILTER (WHERE NOT r.repaid
                                                     AND r.category = 'real_estate'), 0)
                       AS real_estate
            FROM results r
            WHERE r.found AND r.answer IN ('done', 'limit') AND (v_caps OR r.granted > 0)
            GROUP BY r.user_id
        ), investors AS (
            -- Each user's row, in ascending user_id (after the products: the global lock
            -- order), locked whether or not it changes (DO UPDATE ... WHERE locks the row it
            -- meets and writes a version only when the totals move); a new user is
            -- registered, general. RETURNING: the rows written, with their new totals.
            INSERT INTO investor AS i (user_id, invested_total, invested_real_estate)
            SELECT p.user_id, p.total, p.real_estate FROM people p ORDER BY p.user_id
            ON CONFLICT (user_id) DO UPDATE
            SET invested_total = i.invested_total + excluded.invested_total,
                invested_real_estate = i.invested_real_estate + excluded.invested_real_estate
            WHERE excluded.invested_total <> 0 OR excluded.invested_real_estate <> 0
            RETURNING i.user_id, i.investor_class, i.invested_total, i.invested_real_estate
        ), added AS (
            -- first_ord: the user's first granted request of this call in the product.
            SELECT r.goods_id, r.user_id, sum(r.granted)::bigint AS amount,
                   min(r.ord) AS first_ord
            FROM results r WHERE r.granted > 0 GROUP BY r.goods_id, r.user_id
        ), positions AS (
            -- The user's live amount in the product (guarded by the product's row lock).
            INSERT INTO investment_goods_investor AS a (goods_id, user_id, amount)
            SELECT d.goods_id, d.user_id, d.amount FROM added d ORDER BY d.goods_id, d.user_id
            ON CONFLICT (goods_id, user_id) DO UPDATE SET amount = a.amount + excluded.amount
            RETURNING a.goods_id, a.user_id, a.amount
        ), over_cap AS (
            -- The set-wise grants are the serial ones when they leave every user within the
            -- caps of the class (the amounts only grow along the call, so the final ones
            -- bound every earlier one). Otherwise nothing below is written.
            SELECT 1 AS over
            FROM investors i JOIN investor_class_limit c USING (investor_class)
            WHERE NOT v_decided
              AND (i.invested_total > c.total OR i.invested_real_estate > c.real_estate)
            UNION ALL
            SELECT 1
            FROM positions p
            LEFT JOIN investors w ON w.user_id = p.user_id
            LEFT JOIN investor s ON s.user_id = p.user_id
            JOIN investor_class_limit c
              ON c.investor_class = coalesce(w.investor_class, s.investor_class, 'general')
            WHERE NOT v_decided AND p.amount > c.per_product
            LIMIT 1
        ), ledger AS (
            INSERT INTO user_investment_goods (id, user_id, goods_id, user_investing_amount,
                                               invest_date)
            SELECT r.id, r.user_id, r.goods_id, r.granted, v_now FROM results r
            WHERE r.granted > 0 AND NOT EXISTS (SELECT 1 FROM over_cap)
        ), newcomers AS (
            -- Users whose live amount in the product went from 0 to positive (no investment
            -- before the call, or every one cancelled): what it holds now is what this call added.
            SELECT d.goods_id, d.first_ord
            FROM positions p JOIN added d USING (goods_id, user_id)
            WHERE p.amount = d.amount
        ), new_investors AS (
            SELECT n.goods_id, count(*)::integer AS investors
            FROM newcomers n GROUP BY n.goods_id
        ), counters AS (
            UPDATE investment_goods g
            SET current_investing_amount = g.current_investing_amount + m.granted,
                investor_count = g.investor_count + coalesce(n.investors, 0)
            FROM (SELECT d.goods_id, sum(d.amount)::bigint AS granted
                  FROM added d GROUP BY d.goods_id) m
            LEFT JOIN new_investors n ON n.goods_id = m.goods_id
            WHERE g.goods_id = m.goods_id AND g.goods_id = ANY (v_wanted)
              AND NOT EXISTS (SELECT 1 FROM over_cap)
        )
        SELECT array_agg(r.answer ORDER BY r.ord), array_agg(r.found ORDER BY r.ord),
               array_agg(r.total ORDER BY r.ord), array_agg(r.granted ORDER BY r.ord),
               array_agg(r.current ORDER BY r.ord), array_agg(r.state ORDER BY r.ord),
               array_agg(r.id ORDER BY r.ord), array_agg(r.refused ORDER BY r.ord),
               array_agg(r.refused_value ORDER BY r.ord),
               array_agg(r.investors_before ORDER BY r.ord),
               (SELECT array_agg(n.first_ord) FROM newcomers n),
               EXISTS (SELECT 1 FROM over_cap)
        INTO v_outcome, a_found, a_total, v_granted, a_current, a_state, a_id, v_refused,
             v_value, a_investors, a_newcomers, v_over
        FROM results r;
        EXIT WHEN NOT v_over;

        -- Some user would pass a cap. The set-wise amounts were added to the positions and the
        -- investors' totals (and those rows are locked now, like every user's row of the
        -- call): take them back, then decide one by one in array order on the locked state.
        -- Each request's grant is least(asked, the product's remaining after the earlier
        -- grants); when that exceeds the room its user's caps leave (each cap in force less the
        -- live amount it counts, this call's earlier grants included) the request is refused
        -- and takes nothing, so the later requests are answered as if it had not been made.
        UPDATE investor i
        SET invested_total = i.invested_total - d.total,
            invested_real_estate = i.invested_real_estate - d.real_estate
        FROM (SELECT r.user_id,
                     coalesce(sum(r.granted) FILTER (WHERE NOT g.repaid), 0) AS total,
                     coalesce(sum(r.granted) FILTER (WHERE NOT g.repaid
                                                       AND g.category = 'real_estate'), 0)
                         AS real_estate
              FROM unnest(p_goods_ids, p_user_ids, v_granted) AS r(goods_id, user_id, granted)
              JOIN investment_goods g ON g.goods_id = r.goods_id AND g.goods_id = ANY (v_wanted)
              WHERE r.granted > 0
              GROUP BY r.user_id) d
        WHERE i.user_id = d.user_id AND (d.total <> 0 OR d.real_estate <> 0);
        UPDATE investment_goods_investor a
        SET amount = a.amount - d.amount
        FROM (SELECT r.goods_id, r.user_id, sum(r.granted) AS amount
              FROM unnest(p_goods_ids, p_user_ids, v_granted) AS r(goods_id, user_id, granted)
              WHERE r.granted > 0
              GROUP BY r.goods_id, r.user_id) d
        WHERE a.goods_id = d.goods_id AND a.user_id = d.user_id;

        SELECT array_agg(CASE WHEN q.outcome = 'done' AND q.recruiting THEN q.asked
                              ELSE 0 END ORDER BY q.ord),
               array_agg(q.remaining ORDER BY q.ord),
               array_agg(q.p ORDER BY q.ord), array_agg(q.pu ORDER BY q.ord),
               array_agg(q.u ORDER BY q.ord),
               array_agg(c.per_product ORDER BY q.ord), array_agg(c.total ORDER BY q.ord),
               array_agg(c.real_estate ORDER BY q.ord),
               array_agg(coalesce(a.amount, 0) ORDER BY q.ord),
               -- NULL: no cap for this user.
               array_agg(CASE WHEN c.per_product IS NOT NULL OR c.total IS NOT NULL
                                   OR c.real_estate IS NOT NULL
                              THEN coalesce(i.invested_total, 0) END ORDER BY q.ord),
               array_agg(coalesce(i.invested_real_estate, 0) ORDER BY q.ord),
               array_agg(NOT coalesce(q.repaid, false) ORDER BY q.ord),
               array_agg(NOT coalesce(q.repaid, false) AND q.category = 'real_estate'
                         ORDER BY q.ord)
        INTO l_e, l_rem, l_p, l_q, l_u, l_pp, l_tot, l_re, l_amt, l_inv, l_inv_re, l_counts,
             l_real
        FROM (SELECT q.*,
                     dense_rank() OVER (ORDER BY q.goods_id)::integer AS p,
                     dense_rank() OVER (ORDER BY q.goods_id, q.user_id)::integer AS pu,
                     dense_rank() OVER (ORDER BY q.user_id)::integer AS u
              FROM (SELECT r.ord, r.goods_id, r.user_id, r.outcome, r.amount AS asked,
                           g.total_investing_amount - g.current_investing_amount AS remaining,
                           g.category, g.repaid,
                           g.goods_id IS NOT NULL
                               AND goods_state(g.status, g.current_investing_amount,
                                               g.total_investing_amount, g.started_at,
                                               g.finished_at, v_now) = 'recruiting'
                               AS recruiting
                    FROM unnest(p_goods_ids, p_user_ids, p_amounts, v_outcome)
                         WITH ORDINALITY AS r(goods_id, user_id, amount, outcome, ord)
                    LEFT JOIN investment_goods g
                           ON g.goods_id = r.goods_id AND g.goods_id = ANY (v_wanted)) q) q
        LEFT JOIN investor i ON i.user_id = q.user_id
        LEFT JOIN investor_class_limit c
               ON c.investor_class = coalesce(i.investor_class, 'general')
        LEFT JOIN investment_goods_investor a
               ON a.goods_id = q.goods_id AND a.user_id = q.user_id;
        FOR v_i IN 1 .. cardinality(l_e) LOOP
            CONTINUE WHEN l_e[v_i] = 0;
            s_rem[l_p[v_i]] := coalesce(s_rem[l_p[v_i]], l_rem[v_i]);
            v_g := least(l_e[v_i], s_rem[l_p[v_i]]);
            IF v_g > 0 AND l_inv[v_i] IS NOT NULL THEN  -- a user with caps
                s_amt[l_q[v_i]] := coalesce(s_amt[l_q[v_i]], l_amt[v_i]);
                s_tot[l_u[v_i]] := coalesce(s_tot[l_u[v_i]], l_inv[v_i]);
                s_re[l_u[v_i]] := coalesce(s_re[l_u[v_i]], l_inv_re[v_i]);
                v_room := NULL;
                v_cap := NULL;
                IF l_pp[v_i] IS NOT NULL THEN
                    v_room := l_pp[v_i] - s_amt[l_q[v_i]];
                    v_cap := 'per_product';
                END IF;
                IF l_counts[v_i] AND l_tot[v_i] IS NOT NULL
                   AND (v_room IS NULL OR l_tot[v_i] - s_tot[l_u[v_i]] < v_room) THEN
                    v_room := l_tot[v_i] - s_tot[l_u[v_i]];
                    v_cap := 'total';
                END IF;
                IF l_real[v_i] AND l_re[v_i] IS NOT NULL
                   AND (v_room IS NULL OR l_re[v_i] - s_re[l_u[v_i]] < v_room) THEN
                    v_room := l_re[v_i] - s_re[l_u[v_i]];
                    v_cap := 'real_estate';
                END IF;
                IF v_g > v_room THEN
                    v_outcome[v_i] := 'limit';
                    v_refused[v_i] := v_cap;
                    v_value[v_i] := greatest(v_room, 0);
                    v_granted[v_i] := 0;
                    CONTINUE;
                END IF;
                s_amt[l_q[v_i]] := s_amt[l_q[v_i]] + v_g;
                IF l_counts[v_i] THEN
                    s_tot[l_u[v_i]] := s_tot[l_u[v_i]] + v_g;
                END IF;
                IF l_real[v_i] THEN
                    s_re[l_u[v_i]] := s_re[l_u[v_i]] + v_g;
                END IF;
            END IF;
            s_rem[l_p[v_i]] := s_rem[l_p[v_i]] - v_g;
            v_granted[v_i] := v_g;
        END LOOP;
        v_decided := true;
    END LOOP;

    -- The call's other writes, each a statement of its own that runs only when it has
    -- something to write: a statement's every data-modifying CTE is set up (its table and
    -- indexes opened) on every execution, rows or not, and set-up is a fifth of a one-request
    -- call's cost (docs/performance.md "What a small invest call costs"). The arrays hold the
    -- final answers (the loop exits only when nothing passed a cap).
    --
    -- The keyed answers, stored with the investments they answer.
    IF p_keys IS NOT NULL THEN
        INSERT INTO investment_idempotency (
            user_id, idempotency_key, goods_id, requested_amount, found,
            total_investing_amount, investment_amount, current_investing_amount, state,
            invest_date, investment_id, created_at, refused_limit, refused_remaining)
        SELECT r.user_id, r.key, r.goods_id, r.asked, r.found, r.total, r.granted,
               r.current, r.state, v_date, r.id, v_now,
               CASE WHEN r.answer = 'limit' THEN r.refused END,
               CASE WHEN r.answer = 'limit' THEN r.refused_value END
        FROM unnest(p_goods_ids, p_user_ids, p_amounts, p_keys, v_outcome, a_found, a_total,
                    v_granted, a_current, a_state, a_id, v_refused, v_value)
             AS r(goods_id, user_id, asked, key, answer, found, total, granted, current, state,
                  id, refused, refused_value)
        WHERE r.key IS NOT NULL AND r.answer IN ('done', 'limit');
    END IF;
    -- The outbox (sql/migrations/011_outbox.sql), while a relay is configured: one row for the
    -- call (sql/migrations/014_outbox_calls.sql), an event per ledger row in array order, each
    -- with the product's counters right after it: its investor_count grows at each newcomer's
    -- request (the statement above named them, a_newcomers: no lookup of the positions again).
    -- No row when nothing was granted.
    IF EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NOT NULL) THEN
        INSERT INTO investment_event (type, at, investment_ids, user_ids, goods_ids, amounts,
                                      current_investing_amounts, investor_counts)
        SELECT 'accepted', v_now, array_agg(w.id ORDER BY w.ord),
               array_agg(w.user_id ORDER BY w.ord), array_agg(w.goods_id ORDER BY w.ord),
               array_agg(w.granted ORDER BY w.ord), array_agg(w.current ORDER BY w.ord),
               array_agg(w.investors ORDER BY w.ord)
        FROM (SELECT e.ord, e.id, e.user_id, e.goods_id, e.granted, e.current,
                     e.investors_before
                     + count(n.ord) OVER (PARTITION BY e.goods_id ORDER BY e.ord) AS investors
              FROM unnest(p_goods_ids, p_user_ids, v_granted, a_current, a_id, a_investors)
                   WITH ORDINALITY AS e(goods_id, user_id, granted, current, id,
                                        investors_before, ord)
              LEFT JOIN unnest(a_newcomers) AS n(ord) ON n.ord = e.ord
              WHERE e.granted > 0) w
        HAVING count(*) > 0;
    END IF;

    -- The answers: performed now or refused by the product's rules or the user's caps, replayed
    -- from the stored answer, or refused for the key or the lock (nothing else).
    RETURN QUERY
    SELECT r.ord,
           r.outcome,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).found
                WHEN r.outcome IN ('done', 'limit', 'invalid_amount') THEN r.found END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).total_investing_amount
                ELSE r.total END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).investment_amount
                WHEN r.outcome IN ('done', 'limit', 'invalid_amount') THEN r.granted END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).current_investing_amount
                ELSE r.current END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).state ELSE r.state END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).invest_date
                WHEN r.outcome IN ('done', 'limit', 'invalid_amount') THEN v_date END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).investment_id ELSE r.id END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).refused_limit
                ELSE r.refused END,
           CASE WHEN r.outcome = 'replay' THEN (v_stored[r.ord]).refused_remaining
                ELSE r.refused_value END
    FROM unnest(v_outcome, a_found, a_total, v_granted, a_current, a_state, a_id, v_refused,
                v_value)
         WITH ORDINALITY AS r(outcome, found, total, granted, current, state, id, refused,
                              refused_value, ord);
END $$;
