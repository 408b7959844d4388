-- My investments' read model (docs/performance.md, "My investments against a plain
-- implementation: a read model"): one row per live investment (a ledger row not cancelled),
-- stored in the order the API lists a user's items, with the item already rendered but for its
-- date. A page is one range scan of the primary key's
-- covering index (index only): no join to the product, no check against the cancellations, one
-- concatenation and one to_char() per item (sql/queries.sql `my-investments-many`).
--
-- Kept by statement-level triggers (sql/functions/my_investment_item.sql) in the same transaction
-- as the change they follow, so a page read after an answered invest or cancellation shows it
-- (read-your-writes), whatever statement made the change (invest_many(), a cancellation, a
-- maintenance correction, the bench's bulk loads): nothing in invest_many() or the cancellation
-- knows about it. Only those triggers write it: the service's role may read it.
--
-- The item's text: {"goods_id":…,"title":…,"total_investing_amount":…,"user_investing_amount":…
-- and the query appends ,"invest_date":"…","investment_id":…}, the date in the session's
-- (display) time zone, so a change of the display zone shows every date in the new one.

CREATE TABLE my_investment_item (
    user_id       bigint      NOT NULL,
    invest_date   timestamptz NOT NULL,
    investment_id bigint      NOT NULL,
    goods_id      bigint      NOT NULL,
    item          text        NOT NULL,
    CONSTRAINT my_investment_item_pkey
        PRIMARY KEY (user_id, invest_date, investment_id) INCLUDE (item)
);

-- A product's items, rendered again when its title or total changes (an admin change: rare).
CREATE INDEX my_investment_item_by_goods ON my_investment_item (goods_id);

-- Existing data: every live investment (the item's text as my_investment_item_text() in
-- sql/functions/my_investment_item.sql renders it: that file is applied after this one).
INSERT INTO my_investment_item (user_id, invest_date, investment_id, goods_id, item)
SELECT l.user_id, l.invest_date, l.id, l.goods_id,
       g.item_head || ',"user_investing_amount":' || l.user_investing_amount::text
FROM user_investment_goods l
JOIN investment_goods g ON g.goods_id = l.goods_id
WHERE NOT EXISTS (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = l.id);

-- Pages no longer read the ledger by user: its covering index only cost every invest an insert
-- (and 56 MB per million investments).
DROP INDEX user_investment_goods_by_user;

-- The service's role reads the items; only the triggers (as the owner) write them.
GRANT SELECT ON my_investment_item TO investment_service;
