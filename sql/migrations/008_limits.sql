-- Investor limits and cancellation (docs/api.md "Investor limits", "Cancel an investment").
--
-- Limits are data: a fresh database has a row per investor class with no cap at all (NULL), so
-- every answer the service gave before this migration stays as it is until an operator sets caps.
--
-- What invest_many() and the cancellation read and lock, in one global order (products by
-- goods_id, then investors by user_id):
--   investment_goods           the product's total, counters and rules (category, min_amount,
--                              amount_unit, repaid);
--   investment_goods_investor  one row per (product, user) ever invested: the user's live amount
--                              in that product (investments minus cancellations), guarded by the
--                              product's row lock; investor_count = rows with amount > 0;
--   investor                   one row per user who was registered or ever invested: the class,
--                              and the live amounts across products that are not repaid (total
--                              and real-estate), guarded by this row's lock.

-- The caps of each class, in KRW; NULL = no cap.
CREATE TABLE investor_class_limit (
    investor_class text   PRIMARY KEY
        CONSTRAINT investor_class_limit_known
            CHECK (investor_class IN ('general', 'qualified', 'professional')),
    per_product    bigint CONSTRAINT investor_class_limit_per_product_non_negative
                              CHECK (per_product >= 0),
    total          bigint CONSTRAINT investor_class_limit_total_non_negative CHECK (total >= 0),
    real_estate    bigint CONSTRAINT investor_class_limit_real_estate_non_negative
                              CHECK (real_estate >= 0),
    updated_at     timestamptz NOT NULL DEFAULT statement_timestamp()
);

INSERT INTO investor_class_limit (investor_class) VALUES ('general'), ('qualified'), ('professional');

-- The investor registry and each investor's position. A user with no row is `general` with
-- nothing invested; invest_many() adds the row (class general) the first time a user invests.
CREATE TABLE investor (
    user_id              bigint PRIMARY KEY CONSTRAINT investor_user_positive CHECK (user_id > 0),
    investor_class       text   NOT NULL DEFAULT 'general'
                                REFERENCES investor_class_limit (investor_class),
    -- Live amounts (investments minus cancellations) over products that are not repaid.
    invested_total       bigint NOT NULL DEFAULT 0,
    invested_real_estate bigint NOT NULL DEFAULT 0,
    CONSTRAINT investor_invested_within
        CHECK (invested_real_estate >= 0 AND invested_real_estate <= invested_total)
);

-- A product's rules. category: what the real-estate cap counts; min_amount and amount_unit: what
-- an invest may ask for; repaid: its investments no longer count toward a user's total.
ALTER TABLE investment_goods
    ADD COLUMN category    text    NOT NULL DEFAULT 'general'
        CONSTRAINT investment_goods_category_known CHECK (category IN ('general', 'real_estate')),
    ADD COLUMN min_amount  bigint  NOT NULL DEFAULT 1
        CONSTRAINT investment_goods_min_amount_positive CHECK (min_amount >= 1),
    ADD COLUMN amount_unit bigint  NOT NULL DEFAULT 1
        CONSTRAINT investment_goods_amount_unit_positive CHECK (amount_unit >= 1),
    ADD COLUMN repaid      boolean NOT NULL DEFAULT false;

-- The user's live amount in the product. investor_count counts the rows with amount > 0.
ALTER TABLE investment_goods_investor
    ADD COLUMN amount bigint NOT NULL DEFAULT 0
        CONSTRAINT investment_goods_investor_amount_non_negative CHECK (amount >= 0);

-- A cancellation is a row of its own that references the investment (the ledger stays
-- append-only); an investment is cancelled at most once, and wholly.
CREATE TABLE user_investment_cancellation (
    investment_id    bigint      PRIMARY KEY REFERENCES user_investment_goods (id),
    user_id          bigint      NOT NULL,
    goods_id         bigint      NOT NULL REFERENCES investment_goods (goods_id),
    cancelled_amount bigint      NOT NULL
        CONSTRAINT user_investment_cancellation_amount_positive CHECK (cancelled_amount > 0),
    cancelled_at     timestamptz NOT NULL DEFAULT statement_timestamp()
);

-- Existing data: every investment so far is live.
UPDATE investment_goods_investor i
SET amount = s.amount
FROM (SELECT goods_id, user_id, sum(user_investing_amount)::bigint AS amount
      FROM user_investment_goods GROUP BY goods_id, user_id) s
WHERE i.goods_id = s.goods_id AND i.user_id = s.user_id;

INSERT INTO investor (user_id, invested_total)
SELECT user_id, sum(user_investing_amount)::bigint
FROM user_investment_goods
GROUP BY user_id;

-- The service role (sql/migrations/006_service_role.sql): invest_many() and the cancellation
-- keep the positions; the admin API sets classes and caps.
GRANT SELECT, UPDATE ON investor_class_limit TO investment_service;
GRANT SELECT, INSERT, UPDATE ON investor TO investment_service;
GRANT UPDATE ON investment_goods_investor TO investment_service;
GRANT SELECT, INSERT ON user_investment_cancellation TO investment_service;
