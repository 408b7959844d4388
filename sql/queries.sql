-- Every statement the service runs at request time, by name. Loaded once at start
-- (service/sql.py) and executed as prepared statements. Times are formatted here, in the session's
-- time zone (the display time zone), and the product state comes from goods_state().

-- name: list-goods
-- The products whose whole recruitment period lies inside [$1, $2], from the stored counters.
SELECT g.goods_id, g.title, g.total_investing_amount, g.current_investing_amount,
       g.investor_count, s.state IN ('recruiting', 'upcoming') AS status, s.state,
       to_char(g.started_at, 'YYYY-MM-DD HH24:MI:SS') AS started_at,
       to_char(g.finished_at, 'YYYY-MM-DD HH24:MI:SS') AS finished_at
FROM investment_goods g
CROSS JOIN LATERAL (
    SELECT goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                       g.started_at, g.finished_at, statement_timestamp()) AS state
) s
WHERE g.started_at >= $1 AND g.finished_at <= $2
ORDER BY g.goods_id;

-- name: invest-batch
-- One transaction per call: see invest_batch() in sql/migrations/002_invest.sql.
SELECT ord, found, total_investing_amount, investment_amount, current_investing_amount,
       state, invest_date, investment_id
FROM invest_batch($1, $2, $3);

-- name: my-investments-first
-- The first page of a user's ledger rows, oldest first: one range scan of
-- user_investment_goods_by_user. $2 is the page size plus one (to know whether a next page exists).
SELECT u.goods_id, g.title, g.total_investing_amount, u.user_investing_amount,
       to_char(u.invest_date, 'YYYY-MM-DD HH24:MI:SS') AS invest_date,
       (extract(epoch FROM u.invest_date) * 1000000)::bigint AS cursor_micros, u.id
FROM user_investment_goods u
JOIN investment_goods g ON g.goods_id = u.goods_id
WHERE u.user_id = $1
ORDER BY u.invest_date, u.id
LIMIT $2;

-- name: my-investments-after
-- The page after the row ($3 microseconds since the epoch, id $4), same order and scan.
SELECT u.goods_id, g.title, g.total_investing_amount, u.user_investing_amount,
       to_char(u.invest_date, 'YYYY-MM-DD HH24:MI:SS') AS invest_date,
       (extract(epoch FROM u.invest_date) * 1000000)::bigint AS cursor_micros, u.id
FROM user_investment_goods u
JOIN investment_goods g ON g.goods_id = u.goods_id
WHERE u.user_id = $1
  AND (u.invest_date, u.id) > (timestamptz 'epoch' + $3 * interval '1 microsecond', $4)
ORDER BY u.invest_date, u.id
LIMIT $2;

-- name: ready
SELECT 1;
