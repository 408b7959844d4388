-- Every invariant of the ledger, checked on a live database (`just verify`, and the reliability
-- tests after each fault). One row per violation: (check, goods_id, detail); no rows means sound.
-- Reads only; safe to run while the service serves (each product is compared within one snapshot).
--
-- "The ledger" below is its live part: investments minus cancellations (a cancellation is a row
-- of its own that cancels one investment wholly), per (product, user) and per product.
WITH live AS (
    SELECT u.goods_id, u.user_id, sum(u.user_investing_amount) AS amount
    FROM user_investment_goods u
    WHERE NOT EXISTS (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = u.id)
    GROUP BY u.goods_id, u.user_id
), ledger AS (
    SELECT goods_id, sum(amount) AS invested, count(*) AS investors FROM live GROUP BY goods_id
), investors AS (
    SELECT goods_id, count(*) FILTER (WHERE amount > 0) AS investors
    FROM investment_goods_investor GROUP BY goods_id
)
SELECT 'current_equals_ledger' AS check, g.goods_id,
       format('current_investing_amount %s, ledger sum %s',
              g.current_investing_amount, coalesce(l.invested, 0)) AS detail
FROM investment_goods g LEFT JOIN ledger l USING (goods_id)
WHERE g.current_investing_amount <> coalesce(l.invested, 0)
UNION ALL
SELECT 'current_within_total', g.goods_id,
       format('current %s, total %s', g.current_investing_amount, g.total_investing_amount)
FROM investment_goods g
WHERE g.current_investing_amount < 0 OR g.current_investing_amount > g.total_investing_amount
UNION ALL
SELECT 'ledger_within_total', l.goods_id,
       format('ledger sum %s, total %s', l.invested, g.total_investing_amount)
FROM ledger l JOIN investment_goods g USING (goods_id)
WHERE l.invested > g.total_investing_amount
UNION ALL
SELECT 'investor_count_equals_ledger', g.goods_id,
       format('investor_count %s, distinct ledger users %s',
              g.investor_count, coalesce(l.investors, 0))
FROM investment_goods g LEFT JOIN ledger l USING (goods_id)
WHERE g.investor_count <> coalesce(l.investors, 0)
UNION ALL
SELECT 'investor_table_equals_ledger', g.goods_id,
       format('investment_goods_investor rows with amount > 0 %s, distinct ledger users %s',
              coalesce(i.investors, 0), coalesce(l.investors, 0))
FROM investment_goods g LEFT JOIN ledger l USING (goods_id) LEFT JOIN investors i USING (goods_id)
WHERE coalesce(i.investors, 0) <> coalesce(l.investors, 0)
UNION ALL
SELECT 'positive_amounts', u.goods_id, format('ledger row %s has amount %s', u.id, u.user_investing_amount)
FROM user_investment_goods u
WHERE u.user_investing_amount <= 0
UNION ALL
SELECT 'idempotent_answers_in_ledger', k.goods_id,
       format('key of user %s answered investment %s (%s), not in the ledger as such',
              k.user_id, k.investment_id, k.investment_amount)
FROM investment_idempotency k
LEFT JOIN user_investment_goods u
       ON u.id = k.investment_id AND u.user_id = k.user_id AND u.goods_id = k.goods_id
          AND u.user_investing_amount = k.investment_amount
WHERE (k.investment_id IS NOT NULL AND u.id IS NULL)
   OR (k.investment_id IS NULL AND k.investment_amount <> 0)
UNION ALL
-- Cancellations: each names an investment of the same user and product, for its whole amount,
-- and each user's live amount in a product is what investment_goods_investor holds.
SELECT 'cancellation_matches_investment', c.goods_id,
       format('cancellation of investment %s (user %s, %s) does not match the ledger row',
              c.investment_id, c.user_id, c.cancelled_amount)
FROM user_investment_cancellation c
LEFT JOIN user_investment_goods u
       ON u.id = c.investment_id AND u.user_id = c.user_id AND u.goods_id = c.goods_id
          AND u.user_investing_amount = c.cancelled_amount
WHERE u.id IS NULL
UNION ALL
SELECT 'investor_amount_equals_ledger', coalesce(i.goods_id, l.goods_id),
       format('user %s: investment_goods_investor amount %s, live ledger sum %s',
              coalesce(i.user_id, l.user_id), coalesce(i.amount, 0), coalesce(l.amount, 0))
FROM investment_goods_investor i
FULL JOIN live l ON l.goods_id = i.goods_id AND l.user_id = i.user_id
WHERE coalesce(i.amount, 0) <> coalesce(l.amount, 0)
ORDER BY 1, 2;
