'use strict';
// The plain implementation the bench sets the service against (bench/plain.py starts it): the
// same three APIs as the service, written the way a team would write them in a mainstream stack
// without the service's design. Node's cluster module, one process per core (WORKERS), fastify,
// postgres.js with a pool of DB_POOL_SIZE connections in total across the processes (as the
// service's), one SQL statement per request, no batching, no cache.
//
//   DATABASE_URL=postgresql://… PORT=8001 WORKERS=2 DB_POOL_SIZE=50 node bench/plain/server.js
//
// The contract as far as the bench's load uses it (docs/api.md): GET /healthz, the list
// (`started_at`, `finished_at`), invest (`X-USER-ID`, `goodsId`/`investmentAmount`), my
// investments (`X-USER-ID`, `limit`; the first page: the bench never follows a cursor). Errors
// answer the same status and problem `code` as the service for the cases handled here.

const cluster = require('node:cluster');
const os = require('node:os');

const WORKERS = Number(process.env.WORKERS || os.availableParallelism());
const POOL = Number(process.env.DB_POOL_SIZE || 50);
const PORT = Number(process.env.PORT || 8001);
const HOST = process.env.HOST || '127.0.0.1';
const TIMEZONE = process.env.TIMEZONE || 'Asia/Seoul';
const BASE = '/v1/api/investment';
const MAX_PAGE = 1000;

// The products whose whole period lies in the window, with their state (the schema's own
// goods_item(), as any client of this database would use it).
const LIST = `
SELECT i.* FROM investment_goods g CROSS JOIN LATERAL goods_item(g, statement_timestamp()) i
WHERE g.started_at >= $1 AND g.finished_at <= $2 ORDER BY g.goods_id`;

// Invest in one atomic statement. `locked` takes the product's row lock (FOR UPDATE returns its
// latest version) and decides the grant: min(amount, what remains) while recruiting, else 0.
// The user's position in the product (investment_goods_investor) and the investor's totals are
// upserted, and the product's counters move by the grant, investor_count by one when the user's
// position in it is new (`xmax = 0`: the upsert inserted it). The bench never cancels, so a
// position is live once it exists; counting positions whose amount was 0 instead would also count
// a user coming back after cancelling everything, but only once every writer keeps `amount`
// (invest_many() does not yet). The ledger row is written only for a positive grant. No caps:
// the bench's data sets none.
const INVEST = `
WITH locked AS (
    SELECT g.goods_id, g.total_investing_amount AS total, g.current_investing_amount AS before,
           g.category, g.repaid, s.state,
           CASE WHEN s.state = 'recruiting'
                THEN least($3::bigint, g.total_investing_amount - g.current_investing_amount)
                ELSE 0 END AS granted
    FROM investment_goods g
    CROSS JOIN LATERAL (SELECT goods_state(g.status, g.current_investing_amount,
                                           g.total_investing_amount, g.started_at,
                                           g.finished_at, statement_timestamp()) AS state) s
    WHERE g.goods_id = $1
    FOR UPDATE OF g
), ledger AS (
    INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount, invest_date)
    SELECT $2, l.goods_id, l.granted, statement_timestamp() FROM locked l WHERE l.granted > 0
    RETURNING id
), position AS (
    INSERT INTO investment_goods_investor AS p (goods_id, user_id, amount)
    SELECT l.goods_id, $2, l.granted FROM locked l WHERE l.granted > 0
    ON CONFLICT (goods_id, user_id) DO UPDATE SET amount = p.amount + excluded.amount
    RETURNING xmax = 0 AS inserted
), investor AS (
    INSERT INTO investor AS v (user_id, invested_total, invested_real_estate)
    SELECT $2, c.counted, CASE WHEN l.category = 'real_estate' THEN c.counted ELSE 0 END
    FROM locked l
    CROSS JOIN LATERAL (SELECT CASE WHEN l.repaid THEN 0 ELSE l.granted END AS counted) c
    WHERE l.granted > 0
    ON CONFLICT (user_id) DO UPDATE
    SET invested_total = v.invested_total + excluded.invested_total,
        invested_real_estate = v.invested_real_estate + excluded.invested_real_estate
), counters AS (
    UPDATE investment_goods g
    SET current_investing_amount = g.current_investing_amount + l.granted,
        investor_count = g.investor_count
                         + (SELECT count(*) FROM position WHERE position.inserted)::integer
    FROM locked l
    WHERE g.goods_id = l.goods_id AND l.granted > 0
)
SELECT l.goods_id, l.total, l.granted, l.before + l.granted AS current,
       CASE WHEN l.granted = 0 THEN l.state
            WHEN l.before + l.granted >= l.total THEN 'sold_out'
            ELSE 'recruiting' END AS state,
       to_char(statement_timestamp(), 'YYYY-MM-DD HH24:MI:SS') AS invest_date,
       (SELECT id FROM ledger) AS investment_id
FROM locked l`;

// The first page of a user's investments, oldest first, cancelled ones left out.
const MINE = `
SELECT l.goods_id, g.title, g.total_investing_amount, l.user_investing_amount,
       to_char(l.invest_date, 'YYYY-MM-DD HH24:MI:SS') AS invest_date, l.id AS investment_id
FROM user_investment_goods l JOIN investment_goods g ON g.goods_id = l.goods_id
WHERE l.user_id = $1
  AND NOT EXISTS (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = l.id)
ORDER BY l.invest_date, l.id
LIMIT $2`;

const TIME = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})$/;

function problem(reply, status, code, detail) {
  return reply
    .code(status)
    .type('application/problem+json')
    .send(JSON.stringify({ type: 'about:blank', status, code, detail }));
}

function userId(request) {
  const value = request.headers['x-user-id'];
  return typeof value === 'string' && /^[1-9]\d{0,17}$/.test(value) ? value : null;
}

function positiveInteger(value) {
  return Number.isSafeInteger(value) && value >= 1 ? value : null;
}

async function worker() {
  const fastify = require('fastify');
  const postgres = require('postgres');
  const sql = postgres(process.env.DATABASE_URL, {
    max: Math.max(1, Math.floor(POOL / WORKERS)),
    prepare: true,
    connection: { TimeZone: TIMEZONE, application_name: 'bench-plain' },
    types: { bigint: postgres.BigInt },
  });
  const app = fastify({ logger: false });
  // bigint columns come back as BigInt; JSON numbers out of them.
  const json = (value) =>
    JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v));

  app.get('/healthz', async (request, reply) => reply.type('application/json').send('{"status":"ok"}'));

  app.get(`${BASE}/goods`, async (request, reply) => {
    const start = TIME.exec(request.query.started_at || '');
    const end = TIME.exec(request.query.finished_at || '');
    if (!start || !end || start[0] > end[0]) {
      return problem(reply, 400, 'INVALID_PERIOD', 'started_at and finished_at are required');
    }
    const rows = await sql.unsafe(LIST, [`${start[1]} ${start[2]}`, `${end[1]} ${end[2]}`],
      { prepare: true });
    if (rows.length === 0) return problem(reply, 404, 'GOODS_NOT_FOUND', 'no products');
    return reply.type('application/json').send(json(rows));
  });

  app.post(`${BASE}/user/goods`, async (request, reply) => {
    const user = userId(request);
    if (user === null) return problem(reply, 400, 'INVALID_USER_ID', 'X-USER-ID is required');
    const body = request.body;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return problem(reply, 400, 'INVALID_BODY', 'a JSON object is required');
    }
    const goods = positiveInteger(body.goodsId ?? body.goods_id);
    if (goods === null) return problem(reply, 400, 'INVALID_GOODS_ID', 'goodsId is required');
    const amount = positiveInteger(body.investmentAmount ?? body.investment_amount);
    if (amount === null) return problem(reply, 400, 'INVALID_AMOUNT', 'investmentAmount is required');
    const rows = await sql.unsafe(INVEST, [goods, user, amount], { prepare: true });
    if (rows.length === 0) return problem(reply, 404, 'GOODS_NOT_FOUND', `product ${goods}`);
    const r = rows[0];
    const state = r.state;
    return reply.type('application/json').send(json({
      user_id: Number(user),
      goods_id: r.goods_id,
      total_investing_amount: r.total,
      investment_amount: r.granted,
      status: state === 'recruiting',
      invest_date: r.invest_date,
      requested_amount: amount,
      current_investing_amount: r.current,
      state,
      investment_id: r.investment_id,
    }));
  });

  app.get(`${BASE}/user/goods`, async (request, reply) => {
    const user = userId(request);
    if (user === null) return problem(reply, 400, 'INVALID_USER_ID', 'X-USER-ID is required');
    let limit = MAX_PAGE;
    if (request.query.limit !== undefined) {
      limit = /^\d{1,4}$/.test(request.query.limit) ? Number(request.query.limit) : 0;
      if (limit < 1 || limit > MAX_PAGE) {
        return problem(reply, 400, 'INVALID_PAGE', 'limit must be an integer from 1 to 1000');
      }
    }
    const rows = await sql.unsafe(MINE, [user, limit], { prepare: true });
    if (rows.length === 0) {
      return problem(reply, 404, 'INVESTMENTS_NOT_FOUND', `user ${user} has no investments`);
    }
    return reply.type('application/json').send(json(rows));
  });

  await app.listen({ host: HOST, port: PORT, backlog: 4096 });
}

if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i += 1) cluster.fork();
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const child of Object.values(cluster.workers)) child.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  cluster.on('exit', (child, code, signal) => {
    if (!stopping) {
      console.error(`worker ${child.process.pid} exited (${signal || code}): stopping`);
      stop();
      process.exitCode = 1;
    }
    if (Object.keys(cluster.workers).length === 0) process.exit();
  });
} else {
  worker().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
