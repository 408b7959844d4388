-- A repeatable file: applied again whenever it changes, after the numbered migrations.
--
-- The ledger is append-only. UPDATE, DELETE and TRUNCATE of user_investment_goods (and of
-- user_investment_cancellation, the rows that cancel its investments) are refused for
-- every role, the owner included, unless the transaction opts in to the maintenance path:
--
--   BEGIN;
--   SET LOCAL investment.ledger_maintenance = on;   -- this transaction only
--   UPDATE user_investment_goods SET ... ;           -- a deliberate, reviewed correction
--   COMMIT;
--
-- The service's role has no UPDATE, DELETE or TRUNCATE privilege on the ledger at all
-- (sql/migrations/006_service_role.sql), so it cannot take this path; the trigger guards the owner's hands
-- (a mistyped psql statement, a tool run against the wrong database). See docs/reliability.md.

CREATE OR REPLACE FUNCTION user_investment_goods_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('investment.ledger_maintenance', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a deliberate correction runs in a transaction that first does'
                     ' SET LOCAL investment.ledger_maintenance = on';
END $$;

DROP TRIGGER IF EXISTS user_investment_goods_append_only ON user_investment_goods;
CREATE TRIGGER user_investment_goods_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON user_investment_goods
    FOR EACH STATEMENT EXECUTE FUNCTION user_investment_goods_append_only();

DROP TRIGGER IF EXISTS user_investment_cancellation_append_only ON user_investment_cancellation;
CREATE TRIGGER user_investment_cancellation_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON user_investment_cancellation
    FOR EACH STATEMENT EXECUTE FUNCTION user_investment_goods_append_only();
