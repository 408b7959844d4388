-- A repeatable file: applied again whenever it changes, after the numbered migrations.
--
-- My investments' read model (sql/migrations/012_my_investment_item.sql: the table, its indexes,
-- what it holds) kept in the same transaction as every change it follows, by statement-level
-- triggers, so nothing in invest_many() or in the cancellation knows about it:
--   a ledger row inserted              -> its item inserted
--   a cancellation inserted            -> the cancelled investment's item deleted
--   a product's title or total changed -> the items of that product rendered again
--   the ledger's and the cancellations' maintenance path (sql/functions/ledger_append_only.sql),
--   an UPDATE or a DELETE              -> the items of the rows concerned rendered again from
--                                         what is live afterwards
-- The functions are SECURITY DEFINER (the migrations' owner): the service's role reads the table
-- and cannot write it, so the read model changes only with the ledger.

-- The opening of an item: the product's head (investment_goods.item_head,
-- sql/migrations/007_goods_item_head.sql) and the amount; my-investments-many appends the date
-- and the investment's id.
CREATE OR REPLACE FUNCTION my_investment_item_text(p_item_head text, p_amount bigint)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT p_item_head || ',"user_investing_amount":' || p_amount::text
$$;

-- not cancelled.
CREATE OR REPLACE FUNCTION my_investment_item_refresh(p_investment_ids bigint[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    DELETE FROM my_investment_item m
    USING user_investment_goods l
    WHERE l.id = ANY (p_investment_ids)
      AND m.user_id = l.user_id AND m.invest_date = l.invest_date AND m.investment_id = l.id;
    INSERT INTO my_investment_item (user_id, invest_date, investment_id, goods_id, item)
    SELECT l.user_id, l.invest_date, l.id, l.goods_id,
           my_investment_item_text(g.item_head, l.user_investing_amount)
    FROM user_investment_goods l
    JOIN investment_goods g ON g.goods_id = l.goods_id
    WHERE l.id = ANY (p_investment_ids)
      AND NOT EXISTS (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = l.id);
$$;

-- After INSERT on the ledger: the new rows' items (a whole invest_many() call in one statement).
CREATE OR REPLACE FUNCTION my_investment_item_added() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO my_investment_item (user_id, invest_date, investment_id, goods_id, item)
    SELECT a.user_id, a.invest_date, a.id, a.goods_id,
           my_investment_item_text(g.item_head, a.user_investing_amount)
    FROM added a
    JOIN investment_goods g ON g.goods_id = a.goods_id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS my_investment_item_added ON user_investment_goods;
CREATE TRIGGER my_investment_item_added
    AFTER INSERT ON user_investment_goods
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_added();

-- After INSERT on the cancellations: the cancelled investments' items go (the primary key's
-- lookup: user, date and id, read from the ledger row).
CREATE OR REPLACE FUNCTION my_investment_item_cancelled() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    DELETE FROM my_investment_item m
    USING added c
    JOIN user_investment_goods l ON l.id = c.investment_id
    WHERE m.user_id = l.user_id AND m.invest_date = l.invest_date AND m.investment_id = l.id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS my_investment_item_cancelled ON user_investment_cancellation;
CREATE TRIGGER my_investment_item_cancelled
    AFTER INSERT ON user_investment_cancellation
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_cancelled();

-- The maintenance path (sql/functions/ledger_append_only.sql): an UPDATE or DELETE of ledger
-- rows or of cancellations, in a transaction that opted in. The items of the rows before the
-- change are deleted, and those of the rows after it rendered again from what is then live.
CREATE OR REPLACE FUNCTION my_investment_item_corrected() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF TG_TABLE_NAME = 'user_investment_goods' THEN
        DELETE FROM my_investment_item m
        USING old_rows o
        WHERE m.user_id = o.user_id AND m.invest_date = o.invest_date AND m.investment_id = o.id;
        SELECT array_agg(o.id) INTO v_ids FROM old_rows o;
    ELSE
        SELECT array_agg(o.investment_id) INTO v_ids FROM old_rows o;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'user_investment_goods' THEN
        v_ids := v_ids || (SELECT array_agg(n.id) FROM new_rows n);
    ELSIF TG_OP = 'UPDATE' THEN
        v_ids := v_ids || (SELECT array_agg(n.investment_id) FROM new_rows n);
    END IF;
    PERFORM my_investment_item_refresh(v_ids);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS my_investment_item_ledger_updated ON user_investment_goods;
CREATE TRIGGER my_investment_item_ledger_updated
    AFTER UPDATE ON user_investment_goods REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_corrected();
DROP TRIGGER IF EXISTS my_investment_item_ledger_deleted ON user_investment_goods;
CREATE TRIGGER my_investment_item_ledger_deleted
    AFTER DELETE ON user_investment_goods REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_corrected();
DROP TRIGGER IF EXISTS my_investment_item_cancellation_updated ON user_investment_cancellation;
CREATE TRIGGER my_investment_item_cancellation_updated
    AFTER UPDATE ON user_investment_cancellation
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_corrected();
DROP TRIGGER IF EXISTS my_investment_item_cancellation_deleted ON user_investment_cancellation;
CREATE TRIGGER my_investment_item_cancellation_deleted
    AFTER DELETE ON user_investment_cancellation REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION my_investment_item_corrected();

-- A product's title or total changed (the admin API): its items rendered again. invest_many()'s
-- counter updates set neither column, so they never fire it.
CREATE OR REPLACE FUNCTION my_investment_item_goods_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE my_investment_item m
    SET item = my_investment_item_text(NEW.item_head, l.user_investing_amount)
    FROM user_investment_goods l
    WHERE m.goods_id = NEW.goods_id AND l.id = m.investment_id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS my_investment_item_goods_changed ON investment_goods;
CREATE TRIGGER my_investment_item_goods_changed
    AFTER UPDATE OF title, total_investing_amount ON investment_goods
    FOR EACH ROW WHEN (OLD.item_head IS DISTINCT FROM NEW.item_head)
    EXECUTE FUNCTION my_investment_item_goods_changed();
