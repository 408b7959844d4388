-- The administration of caps (docs/operations.md "Operating caps"): an investor's class, a class's
-- caps, and a product's rules. Each is one call, one transaction.
--
-- A change that can put an investor over a cap (a class's caps, a user's class, a product's
-- category or repaid flag) first takes the exclusive limits lock (limits_lock_key(), the key every
-- invest and cancellation takes shared before its rows): it waits for the calls in flight and
-- keeps new ones out until it commits, so it decides on settled positions and no invest can be
-- granted against a cap that is being lowered. Then rows in the global order: the product
-- (investment_goods) and after it the investors in ascending user_id. A change that would leave
-- any investor over a cap in force changes nothing and answers 'limit_below_invested' with the
-- cap, the number of users and the lowest of their ids.
--
-- per_product is checked against the user's live amount in every product, repaid ones included
-- (SPEC §4 counts per_product over "the user's live investments in one product"; only total and
-- real_estate leave repaid products out), so no change here can make a per_product violation.

DROP FUNCTION IF EXISTS admin_set_investor_class(bigint, text);
DROP FUNCTION IF EXISTS admin_set_class_limits(text, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS admin_change_goods(bigint, varchar, bigint, timestamptz, timestamptz,
                                           boolean, text, bigint, bigint, boolean);

-- A user's class. Refused when the user's positions exceed a cap of the new class.
CREATE FUNCTION admin_set_investor_class(p_user_id bigint, p_class text)
RETURNS TABLE (outcome text, cap text, user_id bigint, investor_class text,
               invested_total bigint, invested_real_estate bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_caps    investor_class_limit;
    v_total   bigint := 0;
    v_estate  bigint := 0;
    v_largest bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(limits_lock_key());
    SELECT * INTO v_caps FROM investor_class_limit l WHERE l.investor_class = p_class;
    SELECT i.invested_total, i.invested_real_estate INTO v_total, v_estate
    FROM investor i WHERE i.user_id = p_user_id FOR UPDATE;
    v_total := coalesce(v_total, 0);
    v_estate := coalesce(v_estate, 0);
    IF v_caps.per_product IS NOT NULL THEN
        SELECT max(gi.amount) INTO v_largest
        FROM investment_goods_investor gi WHERE gi.user_id = p_user_id;
    END IF;
    IF v_largest > v_caps.per_product THEN
        RETURN QUERY SELECT 'limit_below_invested', 'per_product', p_user_id, p_class,
                            v_total, v_estate;
    ELSIF v_total > v_caps.total THEN
        RETURN QUERY SELECT 'limit_below_invested', 'total', p_user_id, p_class, v_total, v_estate;
    ELSIF v_estate > v_caps.real_estate THEN
        RETURN QUERY SELECT 'limit_below_invested', 'real_estate', p_user_id, p_class,
                            v_total, v_estate;
    ELSE
        RETURN QUERY
        INSERT INTO investor AS i (user_id, investor_class) VALUES (p_user_id, p_class)
        ON CONFLICT (user_id) DO UPDATE SET investor_class = EXCLUDED.investor_class
        RETURNING 'changed', NULL::text, i.user_id, i.investor_class, i.invested_total,
                  i.invested_real_estate;
    END IF;
END $$;

-- A class's caps (NULL = none), all three at once. Refused when any user of the class (users
-- with no investor row are general) would be over one of them.
CREATE FUNCTION admin_set_class_limits(
    p_class text, p_per_product bigint, p_total bigint, p_real_estate bigint
)
RETURNS TABLE (outcome text, cap text, users bigint, user_id bigint, investor_class text,
               per_product bigint, total bigint, real_estate bigint, updated_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(limits_lock_key());
    PERFORM 1 FROM investor_class_limit l WHERE l.investor_class = p_class FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH over AS (
        SELECT DISTINCT ON (o.user_id) o.user_id, o.cap
        FROM (
            SELECT gi.user_id, 'per_product' AS cap, 1 AS rank
            FROM investment_goods_investor gi
            LEFT JOIN investor i ON i.user_id = gi.user_id
            WHERE p_per_product IS NOT NULL AND gi.amount > p_per_product
              AND coalesce(i.investor_class, 'general') = p_class
            UNION ALL
            SELECT i.user_id, 'total', 2 FROM investor i
            WHERE p_total IS NOT NULL AND i.invested_total > p_total
              AND i.investor_class = p_class
            UNION ALL
            SELECT i.user_id, 'real_estate', 3 FROM investor i
            WHERE p_real_estate IS NOT NULL AND i.invested_real_estate > p_real_estate
              AND i.investor_class = p_class
        ) o
        ORDER BY o.user_id, o.rank
    ), summary AS (
        SELECT count(*) AS users, min(o.user_id) AS user_id,
               (array_agg(o.cap ORDER BY o.user_id))[1] AS cap
        FROM over o
    ), changed AS (
        UPDATE investor_class_limit l
        SET per_product = p_per_product, total = p_total, real_estate = p_real_estate,
            updated_at = statement_timestamp()
        FROM summary s
        WHERE l.investor_class = p_class AND s.users = 0
        RETURNING l.*
    )
    SELECT 'changed', NULL::text, 0::bigint, NULL::bigint, c.investor_class, c.per_product,
           c.total, c.real_estate, c.updated_at
    FROM changed c
    UNION ALL
    SELECT 'limit_below_invested', s.cap, s.users, s.user_id, l.investor_class, l.per_product,
           l.total, l.real_estate, l.updated_at
    FROM summary s JOIN investor_class_limit l ON l.investor_class = p_class
    WHERE s.users > 0;
END $$;

-- A product's fields (NULL keeps the value): the admin API's PATCH and `goods` commands. The
-- total may not go below what is invested, nor the period end before it starts. A change of
-- category or repaid moves the product's live amounts (investment_goods_investor.amount) in its
-- investors' positions: repaid false -> true takes them out of invested_total (and of
-- invested_real_estate for a real-estate product), true -> false puts them back, a category
-- change moves them into or out of invested_real_estate; refused when that would put an investor
-- over the total or real_estate cap of the class. min_amount and amount_unit apply to later
-- invests only. No row: no such product.
CREATE FUNCTION admin_change_goods(
    p_goods_id bigint, p_title varchar, p_total bigint, p_started_at timestamptz,
    p_finished_at timestamptz, p_status boolean, p_category text, p_min_amount bigint,
    p_amount_unit bigint, p_repaid boolean
)
RETURNS TABLE (outcome text, cap text, users bigint, user_id bigint, product investment_goods)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old      investment_goods;
    v_new      investment_goods;
    v_total    bigint;  -- +1, 0 or -1: how the live amounts move in invested_total
    v_estate   bigint;  -- the same for invested_real_estate
    v_users    bigint;
    v_user     bigint;
    v_cap      text;
BEGIN
    IF p_category IS NOT NULL OR p_repaid IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(limits_lock_key());
    END IF;
    SELECT * INTO v_old FROM investment_goods g WHERE g.goods_id = p_goods_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_new := v_old;
    v_new.title := coalesce(p_title, v_old.title);
    v_new.total_investing_amount := coalesce(p_total, v_old.total_investing_amount);
    v_new.started_at := coalesce(p_started_at, v_old.started_at);
    v_new.finished_at := coalesce(p_finished_at, v_old.finished_at);
    v_new.status := coalesce(p_status, v_old.status);
    v_new.category := coalesce(p_category, v_old.category);
    v_new.min_amount := coalesce(p_min_amount, v_old.min_amount);
    v_new.amount_unit := coalesce(p_amount_unit, v_old.amount_unit);
    v_new.repaid := coalesce(p_repaid, v_old.repaid);
    IF v_new.total_investing_amount < v_old.current_investing_amount THEN
        RETURN QUERY SELECT 'total_below_invested', NULL::text, 0::bigint, NULL::bigint, v_old;
        RETURN;
    END IF;
    IF v_new.finished_at <= v_new.started_at THEN
        RETURN QUERY SELECT 'period', NULL::text, 0::bigint, NULL::bigint, v_old;
        RETURN;
    END IF;

    v_total := (NOT v_new.repaid)::integer - (NOT v_old.repaid)::integer;
    v_estate := (NOT v_new.repaid AND v_new.category = 'real_estate')::integer
                - (NOT v_old.repaid AND v_old.category = 'real_estate')::integer;
    IF v_total <> 0 OR v_estate <> 0 THEN
        PERFORM 1 FROM investor i
        WHERE i.user_id IN (SELECT gi.user_id FROM investment_goods_investor gi
                            WHERE gi.goods_id = p_goods_id AND gi.amount > 0)
        ORDER BY i.user_id FOR UPDATE;
        SELECT count(*), min(o.user_id),
               CASE WHEN bool_or(o.over_total) THEN 'total' ELSE 'real_estate' END
        INTO v_users, v_user, v_cap
        FROM (
            SELECT i.user_id,
                   v_total > 0 AND i.invested_total + gi.amount > l.total AS over_total,
                   v_estate > 0 AND i.invested_real_estate + gi.amount > l.real_estate
                       AS over_estate
            FROM investment_goods_investor gi
            JOIN investor i ON i.user_id = gi.user_id
            JOIN investor_class_limit l ON l.investor_class = i.investor_class
            WHERE gi.goods_id = p_goods_id AND gi.amount > 0
        ) o
        WHERE o.over_total OR o.over_estate;
        IF v_users > 0 THEN
            RETURN QUERY SELECT 'limit_below_invested', v_cap, v_users, v_user, v_old;
            RETURN;
        END IF;
        UPDATE investor i
        SET invested_total = i.invested_total + v_total * gi.amount,
            invested_real_estate = i.invested_real_estate + v_estate * gi.amount
        FROM investment_goods_investor gi
        WHERE gi.goods_id = p_goods_id AND gi.amount > 0 AND i.user_id = gi.user_id;
    END IF;

    UPDATE investment_goods g
    SET title = v_new.title, total_investing_amount = v_new.total_investing_amount,
        started_at = v_new.started_at, finished_at = v_new.finished_at, status = v_new.status,
        category = v_new.category, min_amount = v_new.min_amount,
        amount_unit = v_new.amount_unit, repaid = v_new.repaid
    WHERE g.goods_id = p_goods_id
    RETURNING g.* INTO v_new;
    RETURN QUERY SELECT 'changed', NULL::text, 0::bigint, NULL::bigint, v_new;
END $$;
