-- The advisory lock that orders every change of what a user may invest (docs/reliability.md
-- "Investor caps"): invest and cancellation calls take it shared, first, before any row lock; an
-- admin change of caps, of a user's class, or of a product's category or repaid flag takes it
-- exclusive, so it waits for the calls in flight and then judges settled data, and a cap is never
-- changed under a call that is deciding against it. Advisory locks live in the lock manager, not
-- in rows: no MultiXact.
CREATE OR REPLACE FUNCTION limits_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 7202104024::bigint $$;
