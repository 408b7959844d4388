-- A page's rows as my-investments-many read them before the read model: a range scan of the
-- ledger's covering index by user, the product's head read per item (bench/pagecost.py puts it
-- in place of the read model's scan in sql/queries.sql `my-investments-many`).
        SELECT (SELECT g.item_head FROM investment_goods g WHERE g.goods_id = l.goods_id)
               || ',"user_investing_amount":' || l.user_investing_amount::text
               || ',"invest_date":"' || to_char(l.invest_date, 'YYYY-MM-DD HH24:MI:SS') || '"}'
                   AS item,
               l.invest_date, l.id AS investment_id,
               row_number() OVER (ORDER BY l.invest_date, l.id) AS n
        FROM user_investment_goods l
        WHERE l.user_id = r.user_id
          AND (l.invest_date, l.id) > (coalesce(timestamptz 'epoch'
                                                + r.after_micros * interval '1 microsecond',
                                                '-infinity'),
                                       coalesce(r.after_id, 0))
        ORDER BY l.invest_date, l.id
