-- A cancellation keeps the answer it was given (docs/api.md "Cancel an investment"): the same
-- DELETE again answers the same body, so the product's counter and state right after the
-- cancellation are stored with it (the cancelled amount, the product and the moment are there
-- already). The table is append-only and nothing wrote it before this migration.
ALTER TABLE user_investment_cancellation
    ADD COLUMN current_investing_amount bigint NOT NULL,
    ADD COLUMN state                    text   NOT NULL;
