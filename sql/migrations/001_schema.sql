-- The seed's two tables (same column names), with the counters the list reads and the constraints
-- that make the database itself refuse an oversold product or a non-positive investment.

CREATE TABLE investment_goods (
    goods_id                 bigserial    PRIMARY KEY,
    title                    varchar(30)  NOT NULL,
    total_investing_amount   bigint       NOT NULL,
    status                   boolean      NOT NULL DEFAULT true,
    started_at               timestamptz  NOT NULL,
    finished_at              timestamptz  NOT NULL,
    current_investing_amount bigint       NOT NULL DEFAULT 0,
    investor_count           integer      NOT NULL DEFAULT 0,
    CONSTRAINT investment_goods_total_positive CHECK (total_investing_amount > 0),
    CONSTRAINT investment_goods_current_within_total
        CHECK (current_investing_amount >= 0 AND current_investing_amount <= total_investing_amount),
    CONSTRAINT investment_goods_investor_count_non_negative CHECK (investor_count >= 0),
    CONSTRAINT investment_goods_period_ordered CHECK (started_at <= finished_at)
);

CREATE INDEX investment_goods_period ON investment_goods (started_at, finished_at);

-- The ledger: one row per accepted investment, written only by invest_batch().
CREATE TABLE user_investment_goods (
    id                    bigserial    PRIMARY KEY,
    user_id               bigint       NOT NULL,
    goods_id              bigint       NOT NULL REFERENCES investment_goods (goods_id),
    user_investing_amount bigint       NOT NULL,
    invest_date           timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT user_investment_goods_user_positive CHECK (user_id > 0),
    CONSTRAINT user_investment_goods_amount_positive CHECK (user_investing_amount > 0)
);

-- "My investments" is one range scan of this index, in the order the API returns.
CREATE INDEX user_investment_goods_by_user
    ON user_investment_goods (user_id, invest_date, id) INCLUDE (goods_id, user_investing_amount);
CREATE INDEX user_investment_goods_by_goods ON user_investment_goods (goods_id);

-- Who holds at least one investment in a product: its primary key makes investor_count exact
-- (a user's second investment in the same product inserts nothing here).
CREATE TABLE investment_goods_investor (
    goods_id bigint NOT NULL REFERENCES investment_goods (goods_id),
    user_id  bigint NOT NULL,
    PRIMARY KEY (goods_id, user_id)
);

-- Rows inserted with an explicit goods_id (as the seed's fixture does) must not make the next
-- default goods_id collide with them.
CREATE FUNCTION investment_goods_sync_id_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM setval(pg_get_serial_sequence('investment_goods', 'goods_id'),
                   greatest((SELECT max(goods_id) FROM investment_goods),
                            (SELECT last_value FROM investment_goods_goods_id_seq)));
    RETURN NULL;
END $$;

CREATE TRIGGER investment_goods_sync_id_sequence
    AFTER INSERT ON investment_goods
    FOR EACH STATEMENT EXECUTE FUNCTION investment_goods_sync_id_sequence();

-- Leaves room for idempotent retries (SPEC §2 Idempotency-Key): filled in by a later migration.
CREATE TABLE service_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
