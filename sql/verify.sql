-- Every invariant of the ledger, checked on a live database (`just verify`, and the reliability
-- tests after each fault). One row per violation: (check, goods_id, detail); no rows means sound.
-- Reads only; safe to run while the service serves (each product is compared within one snapshot).
WITH ledger AS (
    SELECT goods_id, sum(user_investing_amount) AS invested, count(DISTINCT user_id) AS investors
    FROM user_investment_goods
    GROUP BY goods_id
), investors AS (
    SELECT goods_id, count(*) AS investors FROM investment_goods_investor GROUP BY goods_id
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
       format('investment_goods_investor rows %s, distinct ledger users %s',
              coalesce(i.investors, 0), coalesce(l.investors, 0))
FROM investment_goods g LEFT JOIN ledger l USING (goods_id) LEFT JOIN investors i USING (goods_id)
WHERE coalesce(i.investors, 0) <> coalesce(l.investors, 0)
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
ORDER BY 1, 2;
