-- Invests coalesced across products: invest_many() (sql/functions/invest_many.sql, applied after
-- the numbered migrations) replaces the one-product invest_batch().
DROP FUNCTION invest_batch(bigint, bigint[], bigint[], text[]);

-- No statement reads the ledger by product alone (the verifier scans it whole, and products are
-- never deleted), so this index only cost every invest an insert.
DROP INDEX user_investment_goods_by_goods;
