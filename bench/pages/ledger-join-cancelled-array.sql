SELECT p.found, p.last_micros, p.last_id,
       convert_to('[' || coalesce(p.items, '') || ']', 'UTF8') AS body
FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[])
     WITH ORDINALITY AS r(user_id, page, after_micros, after_id, ord)
CROSS JOIN LATERAL (
    SELECT string_agg(u.item, ',') FILTER (WHERE u.n <= r.page) AS items,
           count(*) AS found,
           max((extract(epoch FROM u.invest_date) * 1000000)::bigint) FILTER (WHERE u.n = r.page)
               AS last_micros,
           max(u.id) FILTER (WHERE u.n = r.page) AS last_id
    FROM (
        SELECT '{"investment_id":' || l.id::text || ',' || substr((SELECT g.item_head FROM investment_goods g WHERE g.goods_id = l.goods_id), 2)
               || ',"user_investing_amount":' || l.user_investing_amount::text
               || ',"invest_date":"' || to_char(l.invest_date, 'YYYY-MM-DD HH24:MI:SS') || '"}'
                   AS item,
               l.invest_date, l.id,
               row_number() OVER (ORDER BY l.invest_date, l.id) AS n
        FROM user_investment_goods l
        WHERE l.user_id = r.user_id
          AND l.id <> ALL (coalesce((SELECT array_agg(c.investment_id)
                                     FROM user_investment_cancellation c
                                     WHERE c.user_id = r.user_id), '{}'))
          AND (l.invest_date, l.id) > (coalesce(timestamptz 'epoch'
                                                + r.after_micros * interval '1 microsecond',
                                                '-infinity'),
                                       coalesce(r.after_id, 0))
        ORDER BY l.invest_date, l.id
        LIMIT r.page + 1
    ) u
) p
ORDER BY r.ord;

