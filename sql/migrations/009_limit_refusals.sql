-- A keyed invest refused for its user's caps (422 INVESTMENT_LIMIT_EXCEEDED) is answered the same
-- way when retried with the same Idempotency-Key: the refusal is stored with the key, as a granted
-- answer is. NULL: the stored answer is not a refusal.
ALTER TABLE investment_idempotency
    ADD COLUMN refused_limit text
        CONSTRAINT investment_idempotency_refused_limit_known
            CHECK (refused_limit IN ('per_product', 'total', 'real_estate')),
    ADD COLUMN refused_remaining bigint;
