-- The goods-id sequence never moves backwards (a repeatable file: applied again whenever it changes,
-- after the numbered migrations).
--
-- It did move backwards: 001's trigger set it to
-- greatest(max(goods_id), last_value), and both were read without a lock, so a concurrent insert's
-- nextval could be undone and the next product create failed on the primary key.
--
-- Every statement that inserts products now takes one transaction-scoped advisory lock before its
-- first row (BEFORE ... FOR EACH STATEMENT), so inserts into investment_goods take turns, each
-- until it commits: a default goods_id is drawn only after every earlier explicit id is committed
-- and the sequence moved past it. After the statement, the sequence is moved forward (never back)
-- to the largest goods_id the statement itself inserted (its transition table, not a snapshot of
-- the whole table). Product creation is an operator's action, rare enough to serialise.
-- SECURITY DEFINER: the service role needs no right to setval (sql/migrations/006_service_role.sql).
-- Their search_path ends with pg_temp: unlisted, PostgreSQL would search the session's temporary
-- schema first, and a caller's `CREATE TEMP TABLE investment_goods_goods_id_seq (...)` would stand
-- in for the real sequence (read as the owner, the real one never moved: a later default id
-- collides). The names are schema-qualified as well.

CREATE OR REPLACE FUNCTION investment_goods_lock_ids() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7202104022);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION investment_goods_sync_id_sequence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_inserted bigint;
    v_last     bigint;
    v_called   boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(7202104022);  -- held already (BEFORE trigger); re-entrant
    SELECT max(goods_id) INTO v_inserted FROM inserted_goods;
    SELECT last_value, is_called INTO v_last, v_called FROM public.investment_goods_goods_id_seq;
    IF v_inserted IS NOT NULL
       AND v_inserted > (CASE WHEN v_called THEN v_last ELSE v_last - 1 END) THEN
        PERFORM setval('public.investment_goods_goods_id_seq', v_inserted);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS investment_goods_lock_ids ON investment_goods;
CREATE TRIGGER investment_goods_lock_ids
    BEFORE INSERT ON investment_goods
    FOR EACH STATEMENT EXECUTE FUNCTION investment_goods_lock_ids();

DROP TRIGGER IF EXISTS investment_goods_sync_id_sequence ON investment_goods;
CREATE TRIGGER investment_goods_sync_id_sequence
    AFTER INSERT ON investment_goods
    REFERENCING NEW TABLE AS inserted_goods
    FOR EACH STATEMENT EXECUTE FUNCTION investment_goods_sync_id_sequence();
