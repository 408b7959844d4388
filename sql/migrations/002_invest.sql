-- The product state and the one-round-trip invest: SPEC.md "Product state" and §2.

-- The state of a product at a moment, checked in SPEC order: closed, sold_out, finished, upcoming.
CREATE FUNCTION goods_state(
    p_status boolean, p_current bigint, p_total bigint,
    p_started_at timestamptz, p_finished_at timestamptz, p_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN NOT p_status THEN 'closed'
        WHEN p_current >= p_total THEN 'sold_out'
        WHEN p_at >= p_finished_at THEN 'finished'
        WHEN p_at < p_started_at THEN 'upcoming'
        ELSE 'recruiting'
    END
$$;

-- Invests a batch of requests for one product, first come first served in array order, and
-- returns one row per request in the same order. One call is one transaction: the product row is
-- locked once, each request is granted min(amount, what remains after the requests before it),
-- every positive grant becomes exactly one ledger row, and the product's counters move by exactly
-- what the ledger gained. A single request is a batch of one.
CREATE FUNCTION invest_batch(p_goods_id bigint, p_user_ids bigint[], p_amounts bigint[])
RETURNS TABLE (
    ord                      bigint,
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
    v_now     timestamptz := statement_timestamp();
    v_date    text := to_char(v_now, 'YYYY-MM-DD HH24:MI:SS');
    v_state   text;
BEGIN
    SELECT * INTO g FROM investment_goods WHERE goods_id = p_goods_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY
            SELECT r.ord, false, NULL::bigint, 0::bigint, NULL::bigint, NULL::text, v_date, NULL::bigint
            FROM unnest(p_user_ids) WITH ORDINALITY AS r(user_id, ord);
        RETURN;
    END IF;

    v_state := goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                           g.started_at, g.finished_at, v_now);
    IF v_state <> 'recruiting' THEN
        RETURN QUERY
            SELECT r.ord, true, g.total_investing_amount, 0::bigint, g.current_investing_amount,
                   v_state, v_date, NULL::bigint
            FROM unnest(p_user_ids) WITH ORDINALITY AS r(user_id, ord);
        RETURN;
    END IF;

    RETURN QUERY
    WITH requested AS (
        SELECT r.ord, r.user_id, r.amount,
               sum(r.amount::numeric) OVER (ORDER BY r.ord) - r.amount AS before
        FROM unnest(p_user_ids, p_amounts) WITH ORDINALITY AS r(user_id, amount, ord)
    ), granted AS (
        SELECT q.ord, q.user_id,
               greatest(0, least(q.amount::numeric,
                                 g.total_investing_amount - g.current_investing_amount - q.before)
               )::bigint AS amount
        FROM requested q
    ), numbered AS (
        SELECT q.ord, q.user_id, q.amount,
               sum(q.amount) OVER (ORDER BY q.ord)::bigint AS granted_so_far,
               CASE WHEN q.amount > 0 THEN nextval('user_investment_goods_id_seq') END AS id
        FROM (SELECT * FROM granted ORDER BY ord) q
    ), ledger AS (
        INSERT INTO user_investment_goods (id, user_id, goods_id, user_investing_amount, invest_date)
        SELECT n.id, n.user_id, p_goods_id, n.amount, v_now FROM numbered n WHERE n.amount > 0
        RETURNING user_id
    ), new_investors AS (
        INSERT INTO investment_goods_investor (goods_id, user_id)
        SELECT DISTINCT p_goods_id, l.user_id FROM ledger l
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), counters AS (
        -- Runs exactly once whether or not the final SELECT reads it (data-modifying WITH).
        UPDATE investment_goods
        SET current_investing_amount = current_investing_amount
                                       + (SELECT coalesce(sum(n.amount), 0) FROM numbered n),
            investor_count = investor_count + (SELECT count(*) FROM new_investors)
        WHERE goods_id = p_goods_id
    )
    SELECT n.ord, true, g.total_investing_amount, n.amount,
           g.current_investing_amount + n.granted_so_far,
           CASE WHEN g.current_investing_amount + n.granted_so_far >= g.total_investing_amount
                THEN 'sold_out' ELSE 'recruiting' END,
           v_date, n.id
    FROM numbered n
    ORDER BY n.ord;
END $$;
