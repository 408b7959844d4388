-- Idempotency-Key (SPEC.md §2): a retried invest replays its first answer and writes nothing.
--
-- A key belongs to a user. The first request with a key stores its result in the same
-- transaction as its ledger row, so the two are committed together or not at all. While that
-- transaction runs it holds a transaction-scoped advisory lock on (user, key): a concurrent
-- request with the same key, on any instance, fails to take the lock and is answered 409
-- IDEMPOTENCY_KEY_IN_USE instead of waiting. After the commit, a retry finds the stored result:
-- with the same product and amount it is replayed, with another body it is 422
-- IDEMPOTENCY_KEY_MISMATCH. Rows are kept at least 24 hours (`forget-idempotency-keys`).

CREATE TABLE investment_idempotency (
    user_id                  bigint      NOT NULL,
    idempotency_key          text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    goods_id                 bigint      NOT NULL,
    requested_amount         bigint      NOT NULL,
    found                    boolean     NOT NULL,
    total_investing_amount   bigint,
    investment_amount        bigint      NOT NULL,
    current_investing_amount bigint,
    state                    text,
    invest_date              text        NOT NULL,
    investment_id            bigint,
    created_at               timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (user_id, idempotency_key)
);

CREATE INDEX investment_idempotency_by_age ON investment_idempotency (created_at);

DROP FUNCTION invest_batch(bigint, bigint[], bigint[]);

-- Invests a batch of requests for one product, first come first served in array order, and
-- returns one row per request in the same order. One call is one transaction: the product row is
-- locked once, each new request is granted min(amount, what remains after the requests before
-- it), every positive grant becomes exactly one ledger row, and the product's counters move by
-- exactly what the ledger gained. p_keys holds each request's Idempotency-Key (NULL: none; the
-- whole array may be NULL). `outcome` is 'done' (performed now), 'replay' (the stored result of
-- an earlier request with this key), 'in_use' or 'mismatch' (nothing done; the other columns NULL).
CREATE FUNCTION invest_batch(
    p_goods_id bigint, p_user_ids bigint[], p_amounts bigint[], p_keys text[]
)
RETURNS TABLE (
    ord                      bigint,
    outcome                  text,
    found                    boolean,
    total_investing_amount   bigint,
    investment_amount        bigint,
    current_investing_amount bigint,
    state                    text,
    invest_date              text,
    investment_id            bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    g         investment_goods%ROWTYPE;
    v_found   boolean;
    v_now     timestamptz := statement_timestamp();
    v_date    text := to_char(v_now, 'YYYY-MM-DD HH24:MI:SS');
    v_state   text;
    v_outcome text[] := array_fill('done'::text, ARRAY[cardinality(p_user_ids)]);
    v_seen    text[] := '{}';
    v_lock    text;
    v_stored  investment_idempotency%ROWTYPE;
BEGIN
    -- Keys first: decide which requests are new. Try-locks never wait, so no lock order matters.
    IF p_keys IS NOT NULL THEN
        FOR i IN 1 .. cardinality(p_user_ids) LOOP
            CONTINUE WHEN p_keys[i] IS NULL;
            v_lock := p_user_ids[i]::text || ':' || p_keys[i];
            IF v_lock = ANY (v_seen)
               OR NOT pg_try_advisory_xact_lock(hashtextextended(v_lock, 0)) THEN
                v_outcome[i] := 'in_use';  -- the same key earlier in this batch, or elsewhere
                CONTINUE;
            END IF;
            v_seen := v_seen || v_lock;
            SELECT * INTO v_stored FROM investment_idempotency k
            WHERE k.user_id = p_user_ids[i] AND k.idempotency_key = p_keys[i];
            IF FOUND THEN
                v_outcome[i] := CASE WHEN v_stored.goods_id = p_goods_id
                                          AND v_stored.requested_amount = p_amounts[i]
                                     THEN 'replay' ELSE 'mismatch' END;
            END IF;
        END LOOP;
    END IF;

    -- Only requests that are new need the product; a batch of replays and refusals answers
    -- without waiting for its row lock.
    IF 'done' = ANY (v_outcome) THEN
        SELECT * INTO g FROM investment_goods WHERE goods_id = p_goods_id FOR UPDATE;
        v_found := FOUND;
    END IF;
    IF v_found THEN
        v_state := goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                               g.started_at, g.finished_at, v_now);
    END IF;

    RETURN QUERY
    WITH requested AS (
        SELECT r.ord, r.user_id, r.key, v_outcome[r.ord::int] AS outcome,
               CASE WHEN v_state = 'recruiting' AND v_outcome[r.ord::int] = 'done'
                    THEN r.amount ELSE 0 END AS amount,
               r.amount AS asked
        FROM unnest(p_user_ids, p_amounts, coalesce(p_keys, '{}'))
             WITH ORDINALITY AS r(user_id, amount, key, ord)
    ), granted AS (
        SELECT q.*,
               greatest(0, least(q.amount::numeric,
                                 g.total_investing_amount - g.current_investing_amount
                                 - (sum(q.amount::numeric) OVER (ORDER BY q.ord) - q.amount))
               )::bigint AS granted
        FROM requested q
    ), numbered AS (
        SELECT q.*,
               sum(q.granted) OVER (ORDER BY q.ord)::bigint AS granted_so_far,
               CASE WHEN q.granted > 0 THEN nextval('user_investment_goods_id_seq') END AS id
        FROM (SELECT * FROM granted ORDER BY ord) q
    ), results AS (
        SELECT n.ord, n.user_id, n.key, n.outcome, n.asked, n.granted, n.id,
               v_found AS found,
               g.total_investing_amount AS total,
               g.current_investing_amount + n.granted_so_far AS current,
               CASE WHEN NOT v_found OR v_state <> 'recruiting' THEN v_state
                    WHEN g.current_investing_amount + n.granted_so_far
                         >= g.total_investing_amount THEN 'sold_out'
                    ELSE 'recruiting' END AS state
        FROM numbered n
    ), ledger AS (
        INSERT INTO user_investment_goods (id, user_id, goods_id, user_investing_amount, invest_date)
        SELECT r.id, r.user_id, p_goods_id, r.granted, v_now FROM results r WHERE r.granted > 0
        RETURNING user_id
    ), new_investors AS (
        INSERT INTO investment_goods_investor (goods_id, user_id)
        SELECT DISTINCT p_goods_id, l.user_id FROM ledger l
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), counters AS (
        -- Runs exactly once whether or not the final SELECT reads it (data-modifying WITH);
        -- it touches the row only when something was granted.
        UPDATE investment_goods
        SET current_investing_amount = current_investing_amount
                                       + (SELECT sum(r.granted) FROM results r),
            investor_count = investor_count + (SELECT count(*) FROM new_investors)
        WHERE goods_id = p_goods_id AND EXISTS (SELECT 1 FROM results r WHERE r.granted > 0)
    ), remembered AS (
        INSERT INTO investment_idempotency (
            user_id, idempotency_key, goods_id, requested_amount, found, total_investing_amount,
            investment_amount, current_investing_amount, state, invest_date, investment_id,
            created_at)
        SELECT r.user_id, r.key, p_goods_id, r.asked, r.found, r.total, r.granted, r.current,
               r.state, v_date, r.id, v_now
        FROM results r
        WHERE r.key IS NOT NULL AND r.outcome = 'done'
    )
    SELECT r.ord, r.outcome,
           CASE r.outcome WHEN 'done' THEN r.found WHEN 'replay' THEN k.found END,
           CASE r.outcome WHEN 'done' THEN r.total WHEN 'replay' THEN k.total_investing_amount END,
           CASE r.outcome WHEN 'done' THEN r.granted WHEN 'replay' THEN k.investment_amount END,
           CASE r.outcome WHEN 'done' THEN r.current
                          WHEN 'replay' THEN k.current_investing_amount END,
           CASE r.outcome WHEN 'done' THEN r.state WHEN 'replay' THEN k.state END,
           CASE r.outcome WHEN 'done' THEN v_date WHEN 'replay' THEN k.invest_date END,
           CASE r.outcome WHEN 'done' THEN r.id WHEN 'replay' THEN k.investment_id END
    FROM results r
    LEFT JOIN investment_idempotency k
           ON r.outcome = 'replay' AND k.user_id = r.user_id AND k.idempotency_key = r.key
    ORDER BY r.ord;
END $$;
