-- A product as the API shows it (SPEC §1's item): one definition for every statement that answers
-- with products (sql/queries.sql: list-goods and the admin-goods-* statements), in the column
-- order of service/handlers.py GOODS_KEYS. Times in the session's (display) time zone; the state
-- as of p_at. A simple SQL function, so the planner inlines it into each query.
CREATE FUNCTION goods_item(g investment_goods, p_at timestamptz)
RETURNS TABLE (
    goods_id                 bigint,
    title                    varchar,
    total_investing_amount   bigint,
    current_investing_amount bigint,
    investor_count           integer,
    status                   boolean,
    state                    text,
    started_at               text,
    finished_at              text
)
LANGUAGE sql STABLE AS $$
    SELECT g.goods_id, g.title, g.total_investing_amount, g.current_investing_amount,
           g.investor_count, s.state IN ('recruiting', 'upcoming'), s.state,
           to_char(g.started_at, 'YYYY-MM-DD HH24:MI:SS'),
           to_char(g.finished_at, 'YYYY-MM-DD HH24:MI:SS')
    FROM (SELECT goods_state(g.status, g.current_investing_amount, g.total_investing_amount,
                             g.started_at, g.finished_at, p_at) AS state) s
$$;
