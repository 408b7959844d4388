-- The role the service connects as may do only what its APIs need (docs/operations.md says how a
-- login role joins it). investment_service is a NOLOGIN group role, shared by every database of
-- the server that runs this service; the grants below are per database. Tables and sequences are
-- granted, not functions' SECURITY DEFINER rights, so a rewrite of invest_many() keeps working
-- as long as it touches only these tables this way. A new table needs its own grants (a test
-- lists every table and what the service role may do with it).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'investment_service') THEN
        CREATE ROLE investment_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created meanwhile by the migration of another database on the same server
END $$;

-- No role but the owner creates objects in public (PostgreSQL 15's default, made explicit for
-- older servers and for databases created from an old template).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO investment_service;

-- list (read), invest_many() (locks and updates the product's counters), admin API (create,
-- update).
GRANT SELECT, INSERT, UPDATE ON investment_goods TO investment_service;
GRANT USAGE, SELECT ON SEQUENCE investment_goods_goods_id_seq TO investment_service;
-- The ledger: read and append, nothing else.
GRANT SELECT, INSERT ON user_investment_goods TO investment_service;
GRANT USAGE, SELECT ON SEQUENCE user_investment_goods_id_seq TO investment_service;
GRANT SELECT, INSERT ON investment_goods_investor TO investment_service;
-- Keys: looked up, stored with the ledger row, deleted when expired (housekeeping).
GRANT SELECT, INSERT, DELETE ON investment_idempotency TO investment_service;
-- `python -m service migrate` as the service role only checks that nothing is pending.
GRANT SELECT ON schema_migrations, schema_repeatables TO investment_service;
