-- The product's part of a "my investments" item (SPEC §3: goods_id, title, total_investing_amount,
-- in its key order, as the opening of a JSON object), kept with the product: my-investments-many
-- (sql/queries.sql) reads it once per item instead of escaping the title and printing two numbers
-- for every item it shows (18 % less PostgreSQL CPU per ~40-item page: docs/performance.md).
-- A stored generated column follows every change of the title or total (the admin API) in the
-- same statement; invest_many()'s counter updates recompute it too, a few concatenations per
-- product per call. Only the products table is rewritten here, never the ledger.

-- to_json() is STABLE for arbitrary types (their output may depend on settings); for text it
-- is only JSON string escaping, so this wrapper may be IMMUTABLE, as a generated column requires.
CREATE FUNCTION json_string(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_json(p_text)::text
$$;

ALTER TABLE investment_goods
    ADD COLUMN item_head text NOT NULL GENERATED ALWAYS AS (
        '{"goods_id":' || goods_id::text || ',"title":' || json_string(title)
        || ',"total_investing_amount":' || total_investing_amount::text
    ) STORED;
