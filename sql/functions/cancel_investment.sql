-- Cancels a user's investment (docs/api.md "Cancel an investment") and answers one row.
--
-- One call is one transaction, with the locks in the order every writer takes them
-- (sql/migrations/008_limits.sql): the investor limits' advisory lock, shared (an operator's
-- change of caps takes it exclusively and waits for calls in flight), then the product row FOR
-- UPDATE, then the investor row. All at top level, never in a subtransaction (a row lock taken
-- in one and updated after it makes a MultiXact on every call). An invest call holds the same
-- product row, so a cancellation and the invests of a rush are serialized on it: whatever their
-- order, the product's counters equal its investments minus its cancellations.
--
-- `outcome`: 'done' (cancelled now), 'replay' (cancelled before: the stored answer, the same
-- body again), 'not_found' (no such investment, or another user's), 'not_cancellable' (the
-- product is closed, finished or not yet started; `state` says which). p_at: the moment the
-- product's state is judged at (NULL: now; tests pass a fixed clock). p_lock_wait_ms: how long
-- each lock may be waited for (NULL: the session's lock_timeout); a row held longer elsewhere
-- fails the call with a lock timeout, nothing done.
-- The stored answer of an investment's cancellation, as 'replay' (no row: not cancelled), read
-- in the snapshot of the statement that calls it.
CREATE OR REPLACE FUNCTION cancellation_answer(p_investment_id bigint)
RETURNS TABLE (
    outcome text, investment_id bigint, goods_id bigint, cancelled_amount bigint,
    cancelled_at text, current_investing_amount bigint, status boolean, state text
)
LANGUAGE sql STABLE AS $$
    SELECT 'replay', c.investment_id, c.goods_id, c.cancelled_amount,
           to_char(c.cancelled_at, 'YYYY-MM-DD HH24:MI:SS'), c.current_investing_amount,
           c.state IN ('recruiting', 'upcoming'), c.state
    FROM user_investment_cancellation c WHERE c.investment_id = p_investment_id
$$;

DROP FUNCTION IF EXISTS cancel_investment(bigint, bigint, timestamptz);
CREATE OR REPLACE FUNCTION cancel_investment(
    p_user_id bigint, p_investment_id bigint, p_at timestamptz DEFAULT NULL,
    p_lock_wait_ms integer DEFAULT NULL
)
RETURNS TABLE (
    outcome text, investment_id bigint, goods_id bigint, cancelled_amount bigint,
    cancelled_at text, current_investing_amount bigint, status boolean, state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now    timestamptz := coalesce(p_at, statement_timestamp());
    v_amount bigint;
    v_goods  bigint;
    g        investment_goods%ROWTYPE;
    v_state  text;
    v_left   bigint;
    v_investors integer;
BEGIN
    -- The ledger row never changes: a plain read, no lock.
    SELECT u.user_investing_amount, u.goods_id INTO v_amount, v_goods
    FROM user_investment_goods u
    WHERE u.id = p_investment_id AND u.user_id = p_user_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found', p_investment_id, NULL::bigint, NULL::bigint, NULL::text,
                            NULL::bigint, NULL::boolean, NULL::text;
        RETURN;
    END IF;

    -- A repeat after the first committed needs no lock: its answer is stored.
    RETURN QUERY SELECT * FROM cancellation_answer(p_investment_id);
    IF FOUND THEN
        RETURN;
    END IF;

    IF p_lock_wait_ms IS NOT NULL THEN  -- for this transaction, which is this call
        PERFORM set_config('lock_timeout', greatest(1, p_lock_wait_ms) || 'ms', true);
    END IF;
    PERFORM pg_advisory_xact_lock_shared(7202104024);  -- the investor limits' lock key
    SELECT * INTO g FROM investment_goods x WHERE x.goods_id = v_goods FOR UPDATE;

    -- Checked again under the product's lock (a new statement, so a new snapshot): a concurrent
    -- cancellation of the same investment held this lock until it committed.
    RETURN QUERY SELECT * FROM cancellation_answer(p_investment_id);
    IF FOUND THEN
        RETURN;
    END IF;

    -- Cancellable while recruiting or sold out within its period, and not closed.
    IF NOT g.status OR v_now < g.started_at OR v_now >= g.finished_at THEN
        v_state := goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                               g.started_at, g.finished_at, v_now);
        RETURN QUERY SELECT 'not_cancellable', p_investment_id, g.goods_id, NULL::bigint,
                            NULL::text, g.current_investing_amount,
                            v_state IN ('recruiting', 'upcoming'), v_state;
        RETURN;
    END IF;

    g.current_investing_amount := g.current_investing_amount - v_amount;
    v_state := goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                           g.started_at, g.finished_at, v_now);
    INSERT INTO user_investment_cancellation AS c (
        investment_id, user_id, goods_id, cancelled_amount, cancelled_at,
        current_investing_amount, state)
    VALUES (p_investment_id, p_user_id, g.goods_id, v_amount, v_now,
            g.current_investing_amount, v_state);
    -- The user's live amount in the product (guarded by the product's lock): at 0 the user no
    -- longer counts among its investors.
    UPDATE investment_goods_investor i SET amount = i.amount - v_amount
    WHERE i.goods_id = g.goods_id AND i.user_id = p_user_id
    RETURNING i.amount INTO v_left;
    UPDATE investment_goods x
    SET current_investing_amount = g.current_investing_amount,
        investor_count = x.investor_count - CASE WHEN v_left = 0 THEN 1 ELSE 0 END
    WHERE x.goods_id = g.goods_id
    RETURNING x.investor_count INTO v_investors;
    -- The outbox (sql/migrations/011_outbox.sql), while a relay is configured: the cancellation
    -- with the product's counters right after it, written under the product's lock, so its
    -- `seq` (and its event_id) follows every event of the product committed before it.
    -- One row, one event (sql/migrations/014_outbox_calls.sql).
    INSERT INTO investment_event (type, at, investment_ids, user_ids, goods_ids, amounts,
                                  current_investing_amounts, investor_counts)
    SELECT 'cancelled', v_now, ARRAY[p_investment_id], ARRAY[p_user_id], ARRAY[g.goods_id],
           ARRAY[v_amount], ARRAY[g.current_investing_amount], ARRAY[v_investors]
    WHERE EXISTS (SELECT 1 FROM investment_event_relay WHERE seen_at IS NOT NULL);
    -- The room it took under the user's caps (a repaid product's investments count no more).
    IF NOT g.repaid THEN
        UPDATE investor v
        SET invested_total = v.invested_total - v_amount,
            invested_real_estate = v.invested_real_estate
                                   - CASE WHEN g.category = 'real_estate' THEN v_amount ELSE 0 END
        WHERE v.user_id = p_user_id;
    END IF;

    RETURN QUERY SELECT 'done', p_investment_id, g.goods_id, v_amount,
                        to_char(v_now, 'YYYY-MM-DD HH24:MI:SS'), g.current_investing_amount,
                        v_state IN ('recruiting', 'upcoming'), v_state;
END $$;
