-- A small demo data set for `just run` on the embedded database: one product in every state,
-- with investments made through invest_many() so that counters and ledger agree.
-- Applied once (service_meta 'demo_data'); times are relative to the moment it is loaded.

-- An example of caps, not a legal reference: the Online Investment-Linked Financial Business
-- Act's caps for individuals (general: 5,000,000 KRW per product, 30,000,000 in total, of which
-- 10,000,000 in real estate; income-qualified: 20,000,000 and 100,000,000; professional: none).
-- Set through the admin's own functions (sql/functions/admin_limits.sql), before any investment,
-- so every demo investment below is decided under them (and fits them).
SELECT admin_set_class_limits('general', 5000000, 30000000, 10000000);
SELECT admin_set_class_limits('qualified', 20000000, 100000000, NULL);
SELECT admin_set_class_limits('professional', NULL, NULL, NULL);
-- User 2 is an income-qualified investor; users 1 and 3 are general (not registered).
SELECT admin_set_investor_class(2, 'qualified');

-- The mortgage and PF products are real estate (they count toward the real-estate cap); the
-- personal-credit portfolio takes whole 10,000 KRW units from 10,000 up.
INSERT INTO investment_goods (title, total_investing_amount, status, started_at, finished_at,
                              category, min_amount, amount_unit) VALUES
    ('개인신용 포트폴리오',        1000000,  true,  now() - interval '3 days', now() + interval '27 days', 'general', 10000, 10000),
    ('강남 오피스텔 담보대출',     50000000, true,  now() - interval '1 day',  now() + interval '14 days', 'real_estate', 1, 1),
    ('부동산 PF 1호',              300000,   true,  now() - interval '2 days', now() + interval '5 days', 'real_estate', 1, 1),
    ('소상공인 매출채권',          2000000,  true,  now() + interval '3 days', now() + interval '30 days', 'general', 1, 1),
    ('아파트 담보 2호',            800000,   true,  now() - interval '40 days', now() - interval '10 days', 'real_estate', 1, 1),
    ('사업자 신용 포트폴리오',     5000000,  false, now() - interval '5 days', now() + interval '20 days', 'general', 1, 1);

-- Investments from users 1..3 (the README's curl examples use X-USER-ID: 1).
SELECT invest_many(array_fill(goods_id, ARRAY[4]), ARRAY[1, 2, 3, 1]::bigint[], ARRAY[100000, 50000, 70000, 30000]::bigint[], NULL)
FROM investment_goods WHERE title = '개인신용 포트폴리오';
SELECT invest_many(array_fill(goods_id, ARRAY[2]), ARRAY[1, 2]::bigint[], ARRAY[2000000, 1000000]::bigint[], NULL)
FROM investment_goods WHERE title = '강남 오피스텔 담보대출';
-- Sold out: the second request takes only what remains.
SELECT invest_many(array_fill(goods_id, ARRAY[2]), ARRAY[2, 3]::bigint[], ARRAY[200000, 500000]::bigint[], NULL)
FROM investment_goods WHERE title = '부동산 PF 1호';
-- Finished: invested while it was recruiting, then its period ended, and it was repaid (its
-- investments no longer count toward the investors' totals).
UPDATE investment_goods SET finished_at = now() + interval '1 day' WHERE title = '아파트 담보 2호';
SELECT invest_many(array_fill(goods_id, ARRAY[2]), ARRAY[1, 3]::bigint[], ARRAY[300000, 100000]::bigint[], NULL)
FROM investment_goods WHERE title = '아파트 담보 2호';
UPDATE investment_goods SET finished_at = now() - interval '10 days' WHERE title = '아파트 담보 2호';
SELECT admin_change_goods(goods_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true)
FROM investment_goods WHERE title = '아파트 담보 2호';
