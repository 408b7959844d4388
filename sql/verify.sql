-- Every invariant of the ledger, checked on a live database (`just verify`, and the reliability
-- tests after each fault). One row per violation: (check, goods_id, detail); goods_id is NULL for
-- a check about a user across products. No rows means sound. Reads only; safe to run while the
-- service serves (service/ops/verify.py runs it in one REPEATABLE READ snapshot).
--
-- "Live" is what the ledger holds less what was cancelled (an investment is cancelled wholly, at
-- most once): a product's counters, a user's amount in it, and a user's totals over products not
-- repaid are all live sums.
WITH live_rows AS (
    SELECT u.goods_id, u.user_id, u.user_investing_amount - coalesce(c.cancelled_amount, 0) AS amount
    FROM user_investment_goods u
    LEFT JOIN user_investment_cancellation c ON c.investment_id = u.id
), live AS (  -- per (product, user)
    SELECT goods_id, user_id, sum(amount) AS amount FROM live_rows GROUP BY goods_id, user_id
), ledger AS (
    SELECT goods_id, sum(amount) AS invested, count(*) FILTER (WHERE amount > 0) AS investors
    FROM live
    GROUP BY goods_id
), investors AS (
    SELECT goods_id, count(*) FILTER (WHERE amount > 0) AS investors
    FROM investment_goods_investor GROUP BY goods_id
), user_live AS (
    SELECT l.user_id,
           coalesce(sum(l.amount) FILTER (WHERE NOT g.repaid), 0) AS total,
           coalesce(sum(l.amount) FILTER (WHERE NOT g.repaid AND g.category = 'real_estate'), 0)
               AS real_estate
    FROM live l JOIN investment_goods g USING (goods_id)
    GROUP BY l.user_id
), capped AS (  -- every investor with the caps of the class (NULL: none)
    SELECT i.user_id, i.invested_total, i.invested_real_estate, c.per_product, c.total,
           c.real_estate
    FROM investor i JOIN investor_class_limit c USING (investor_class)
)
SELECT 'current_equals_ledger' AS check, g.goods_id,
       format('current_investing_amount %s, live ledger sum %s',
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
       format('live ledger sum %s, total %s', l.invested, g.total_investing_amount)
FROM ledger l JOIN investment_goods g USING (goods_id)
WHERE l.invested > g.total_investing_amount
UNION ALL
SELECT 'investor_count_equals_ledger', g.goods_id,
       format('investor_count %s, users with a live investment %s',
              g.investor_count, coalesce(l.investors, 0))
FROM investment_goods g LEFT JOIN ledger l USING (goods_id)
WHERE g.investor_count <> coalesce(l.investors, 0)
UNION ALL
SELECT 'investor_table_equals_ledger', g.goods_id,
       format('investment_goods_investor rows with an amount %s, users with a live investment %s',
              coalesce(i.investors, 0), coalesce(l.investors, 0))
FROM investment_goods g LEFT JOIN ledger l USING (goods_id) LEFT JOIN investors i USING (goods_id)
WHERE coalesce(i.investors, 0) <> coalesce(l.investors, 0)
UNION ALL
SELECT 'position_equals_ledger', coalesce(p.goods_id, l.goods_id),
       format('user %s: investment_goods_investor.amount %s, live ledger sum %s',
              coalesce(p.user_id, l.user_id), p.amount, coalesce(l.amount, 0))
FROM investment_goods_investor p
FULL JOIN live l ON l.goods_id = p.goods_id AND l.user_id = p.user_id
WHERE p.amount IS DISTINCT FROM coalesce(l.amount, 0)
  AND NOT (p.goods_id IS NULL AND l.amount = 0)
UNION ALL
SELECT 'investor_totals_equal_ledger', NULL,
       format('user %s: invested_total %s, invested_real_estate %s; live ledger %s, %s',
              coalesce(i.user_id, u.user_id), i.invested_total, i.invested_real_estate,
              coalesce(u.total, 0), coalesce(u.real_estate, 0))
FROM investor i FULL JOIN user_live u USING (user_id)
WHERE (i.user_id IS NULL AND (u.total <> 0 OR u.real_estate <> 0))
   OR (i.user_id IS NOT NULL AND (i.invested_total <> coalesce(u.total, 0)
                                  OR i.invested_real_estate <> coalesce(u.real_estate, 0)))
UNION ALL
SELECT 'within_caps', NULL,
       format('user %s: invested_total %s (cap %s), invested_real_estate %s (cap %s)',
              c.user_id, c.invested_total, c.total, c.invested_real_estate, c.real_estate)
FROM capped c
WHERE c.invested_total > c.total OR c.invested_real_estate > c.real_estate
UNION ALL
SELECT 'within_caps', p.goods_id,
       format('user %s: amount %s in the product (per_product cap %s)',
              p.user_id, p.amount, coalesce(c.per_product, g.per_product))
FROM investment_goods_investor p
LEFT JOIN capped c USING (user_id)
CROSS JOIN (SELECT per_product FROM investor_class_limit WHERE investor_class = 'general') g
WHERE p.amount > coalesce(c.per_product, CASE WHEN c.user_id IS NULL THEN g.per_product END)
UNION ALL
-- My investments' read model (sql/migrations/012_my_investment_item.sql) lists exactly the live
-- investments (not cancelled), each with its ledger row's data and its product's head as it is.
SELECT 'my_investments_equal_live_ledger', coalesce(l.goods_id, m.goods_id),
       format('investment %s %s', coalesce(l.id, m.investment_id),
              CASE WHEN m.investment_id IS NULL THEN 'is live but not listed'
                   WHEN l.id IS NULL THEN 'is listed but not live'
                   ELSE 'is listed with other data' END)
FROM (SELECT u.*, my_investment_item_text(g.item_head, u.user_investing_amount) AS item
      FROM user_investment_goods u JOIN investment_goods g USING (goods_id)
      WHERE NOT EXISTS (SELECT 1 FROM user_investment_cancellation c
                        WHERE c.investment_id = u.id)) l
FULL JOIN my_investment_item m ON m.investment_id = l.id
WHERE m.investment_id IS NULL OR l.id IS NULL
   OR (m.user_id, m.invest_date, m.goods_id, m.item)
      IS DISTINCT FROM (l.user_id, l.invest_date, l.goods_id, l.item)
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
-- Cancellations: each names an investment of the same user and product, for its whole amount.
SELECT 'cancellation_matches_investment', c.goods_id,
       format('cancellation of investment %s (user %s, %s) does not match the ledger row',
              c.investment_id, c.user_id, c.cancelled_amount)
FROM user_investment_cancellation c
LEFT JOIN user_investment_goods u
       ON u.id = c.investment_id AND u.user_id = c.user_id AND u.goods_id = c.goods_id
          AND u.user_investing_amount = c.cancelled_amount
WHERE u.id IS NULL
ORDER BY 1, 2;
