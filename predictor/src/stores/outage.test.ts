import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '@m2m/common';
import { Redis, ReplyError } from 'ioredis';
import pg from 'pg';
import { createMetrics } from '../http/metrics.js';
import { StoreUnavailable } from '../http/problems.js';
import { IdempotencyClaimContended, PostgresIdempotencyStore } from '../idempotency/postgres.js';
import type { Plan } from '../limits/plans.js';
import type { RateLimitDecision } from '../limits/rate-limiter.js';
import { RedisRateLimiter, rateLimitKey, UnexpectedScriptReply } from '../limits/redis.js';
import { requirePostgres, requireRedis, TEST_DATABASE_URL, TEST_REDIS_URL, uniqueSchemaName, withTestDatabase } from '../testing/engines.js';
import { TcpFaultProxy } from '../testing/tcp-fault-proxy.js';
import { GuardedRateLimiter, StoreGuard, type FailurePolicy } from './failure-policy.js';
import { redisClientOptions } from './open.js';
import { isOutage, isPostgresOutage, isRedisOutage, type OutageClassifier } from './outage.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

const require = createRequire(import.meta.url);
// ioredis's own classes, from the copies ioredis itself loads.
const { MaxRetriesPerRequestError } = require('ioredis/built/errors/index.js') as { MaxRetriesPerRequestError: new (maxRetriesPerRequest: number) => Error };
const { default: ClusterAllFailedError } = require('ioredis/built/errors/ClusterAllFailedError.js') as { default: new (message: string) => Error };
const redisErrors = createRequire(require.resolve('ioredis'))('redis-errors') as Record<string, new (...args: unknown[]) => Error>;

const withCode = (error: Error, code: string) => Object.assign(error, { code });
const serverMessage = (message: string, code?: string) => Object.assign(new pg.DatabaseError(message, 0, 'error'), code === undefined ? {} : { code });

describe('which store errors are outages', () => {
  const connectionErrors = [
    withCode(new Error('connect ECONNREFUSED 127.0.0.1:6379'), 'ECONNREFUSED'),
    withCode(new Error('read ECONNRESET'), 'ECONNRESET'),
    withCode(new Error('write EPIPE'), 'EPIPE'),
    withCode(new Error('getaddrinfo ENOTFOUND redis'), 'ENOTFOUND'),
    withCode(new AggregateError([withCode(new Error('connect ECONNREFUSED ::1:5432'), 'ECONNREFUSED')], ''), 'ECONNREFUSED'),
  ];

  it('Redis: every error that is not a reply, and the replies of a server that cannot serve now', () => {
    const outages: Error[] = [
      ...connectionErrors,
      new MaxRetriesPerRequestError(0),
      new ClusterAllFailedError('Failed to refresh slots cache.'),
      new redisErrors['AbortError']!('Command aborted due to connection close'),
      new redisErrors['InterruptError']!('interrupted'),
      new redisErrors['ParserError']!('Protocol error, got "x" as reply type byte', Buffer.from('x'), 0),
      new Error('Connection is closed.'),
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      new Error('Command timed out'),
      new Error("Socket timeout. Expecting data, but didn't receive any in 100ms."),
      new Error('None of startup nodes is available'),
      new Error("Cluster isn't ready and enableOfflineQueue options is false"),
      new Error('a message no one has seen yet'),
      ...[
        'LOADING Redis is loading the dataset in memory',
        'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
        'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.',
        "READONLY You can't write against a read only replica.",
        'TRYAGAIN Multiple keys request during rehashing of slot',
        'CLUSTERDOWN The cluster is down',
        "OOM command not allowed when used memory > 'maxmemory'.",
        'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
        'NOAUTH Authentication required.',
        'WRONGPASS invalid username-password pair or user is disabled.',
        'ERR max number of clients reached',
      ].map((message) => new ReplyError(message) as Error),
    ];
    const own: unknown[] = [
      new ReplyError('ERR Error running script (call to f_x): @user_script:12: attempt to compare nil with number'),
      new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value'),
      new ReplyError('BUSYKEY Target key name already exists.'),
      new ReplyError("ERR unknown command 'm2mRateLimitDecide'"),
      new UnexpectedScriptReply([2]),
      new TypeError('Cannot read properties of undefined'),
      'a string',
      undefined,
    ];
    for (const error of outages) assert.ok(isRedisOutage(error), `${error.name}: ${error.message}`);
    for (const error of own) assert.ok(!isRedisOutage(error), String((error as Error | undefined)?.message ?? error));
  });

  it('PostgreSQL: every error that is not a server message, and the SQLSTATEs of a server that cannot serve now', () => {
    const outages: Error[] = [
      ...connectionErrors,
      new Error('Connection terminated unexpectedly'),
      new Error('Connection terminated due to connection timeout', { cause: new Error('timeout expired') }),
      new Error('Connection terminated'),
      new Error('Client has encountered a connection error and is not queryable'),
      new Error('Client was closed and is not queryable'),
      new Error('timeout exceeded when trying to connect'),
      new Error('Query read timeout'),
      new Error('Cannot use a pool after calling end on the pool'),
      new Error('Received unexpected dataRow message from backend.'),
      new Error('The server does not support SSL connections'),
      new Error('a message no one has seen yet'),
      serverMessage('received invalid response: 0'),
      serverMessage('connection failure', '08006'),
      serverMessage('password authentication failed for user "app"', '28P01'),
      serverMessage('database "gone" does not exist', '3D000'),
      serverMessage('sorry, too many clients already', '53300'),
      serverMessage('could not extend file: No space left on device', '53100'),
      serverMessage('canceling statement due to statement timeout', '57014'),
      serverMessage('terminating connection due to administrator command', '57P01'),
      serverMessage('terminating connection because of crash of another server process', '57P02'),
      serverMessage('the database system is starting up', '57P03'),
      serverMessage('could not read block 0: I/O error', '58030'),
      serverMessage('cannot execute INSERT in a read-only transaction', '25006'),
    ];
    const own: unknown[] = [
      serverMessage('duplicate key value violates unique constraint "idempotency_keys_pkey"', '23505'),
      serverMessage('invalid byte sequence for encoding "UTF8": 0x00', '22021'),
      serverMessage('could not serialize access due to concurrent update', '40001'),
      serverMessage('relation "x.idempotency_keys" does not exist', '42P01'),
      new TypeError('Client was passed a null or undefined query'),
      new IdempotencyClaimContended('The claim of idempotency key c/k lost 5 races in a row.'),
      'a string',
    ];
    for (const error of outages) assert.ok(isPostgresOutage(error), `${error.name}: ${error.message}`);
    for (const error of own) assert.ok(!isPostgresOutage(error), String((error as Error | undefined)?.message ?? error));
  });

  it('the default classifier knows both engines by class, code and message, and nothing else', () => {
    const outages: Error[] = [
      ...connectionErrors,
      new MaxRetriesPerRequestError(0),
      new redisErrors['AbortError']!('Command aborted due to connection close'),
      new Error('Connection is closed.'),
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      new Error('Command timed out'),
      new ReplyError('LOADING Redis is loading the dataset in memory') as Error,
      new Error('Connection terminated unexpectedly'),
      new Error('Client has encountered a connection error and is not queryable'),
      new Error('timeout exceeded when trying to connect'),
      new Error('Query read timeout'),
      serverMessage('canceling statement due to statement timeout', '57014'),
      serverMessage('terminating connection due to administrator command', '57P01'),
    ];
    for (const error of outages) assert.ok(isOutage(error), `${error.name}: ${error.message}`);
    for (const error of [
      new ReplyError('ERR Error running script') as Error,
      serverMessage('duplicate key value violates unique constraint', '23505'),
      new Error('a message no one has seen yet'),
    ]) {
      assert.ok(!isOutage(error), error.message);
    }
  });
});

// --- The real engines, through a proxy that breaks the connection at a chosen moment ---

const PLAN: Plan = { name: 'standard', burst: 30, refillPerSecond: 10, dailyQuota: 100_000 };
const POLICIES: FailurePolicy[] = ['fail-closed', 'degrade'];
const BOUND_MS = 5_000;

/** Polls `condition` until it holds; fails after `BOUND_MS` naming what it waited for. */
async function waitFor(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + BOUND_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A guard as open.ts builds it, logging into `lines`. */
function guardFor(policy: FailurePolicy, store: 'rate_limiter' | 'idempotency', classifier: OutageClassifier) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('predictor', 'info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const guard = new StoreGuard({ store, engine: store === 'rate_limiter' ? 'redis' : 'postgres', policy, isOutage: classifier, logger, metrics: createMetrics({ collectProcessMetrics: false }) });
  return { guard, lines };
}

/** What a request met: the guard's answer, and the error the engine raised under it. */
interface Met<T> {
  outcome: PromiseSettledResult<T>;
  raw: unknown;
}

/**
 * Asserts what the policy answers for an outage: 503 with Retry-After under fail-closed, the
 * fallback's result under degrade; the store marked down, never a `store.error`.
 */
function assertOutageAnswered<T>(policy: FailurePolicy, met: Met<T>, guard: StoreGuard, lines: Record<string, unknown>[], isFallback: (value: T) => boolean): void {
  const { outcome } = met;
  if (policy === 'fail-closed') {
    assert.equal(outcome.status, 'rejected', 'fail-closed refuses');
    const error = (outcome as PromiseRejectedResult).reason as unknown;
    assert.ok(error instanceof StoreUnavailable, `expected StoreUnavailable, got ${String(error)}`);
    assert.equal(error.status, 503);
    assert.equal(error.headers['retry-after'], '1');
  } else {
    assert.equal(outcome.status, 'fulfilled', `degrade serves from memory, got ${outcome.status === 'rejected' ? String(outcome.reason) : ''}`);
    assert.ok(isFallback((outcome as PromiseFulfilledResult<T>).value), 'the answer came from the fallback');
  }
  assert.equal(guard.status, 'down', `an outage marks the store down (the engine raised ${show(met.raw)})`);
  assert.equal(lines.filter((line) => line['event'] === 'store.error').length, 0);
  assert.equal(lines.filter((line) => line['event'] === 'store.down').length, 1);
}

/** An error as one line: class, message, code. */
function show(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}${(error as { code?: string }).code ? ` (${(error as { code?: string }).code})` : ''}` : String(error);
}

describe('Redis faults through a proxy, under both policies', { skip: skipUnlessEngines(['redis']) }, () => {
  const prefix = `${uniqueSchemaName('test_outage')}:`;

  before(() => requireRedis());

  after(async () => {
    const redis = new Redis(TEST_REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });

  /** A limiter on a client built as open.ts builds it, through a proxy, its script loaded. */
  async function limiterThroughProxy() {
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_REDIS_URL, 6379);
    const redis = new Redis(url, redisClientOptions());
    redis.on('error', () => {});
    const close = async () => {
      redis.disconnect();
      await proxy.close();
    };
    try {
      await once(redis, 'ready', { signal: AbortSignal.timeout(BOUND_MS) });
      const limiter = new RedisRateLimiter({ redis, keyPrefix: prefix });
      await limiter.consume('warm-up', PLAN);
      return { proxy, redis, limiter, close };
    } catch (error) {
      await close();
      throw error;
    }
  }

  type Setup = Awaited<ReturnType<typeof limiterThroughProxy>>;
  const scenarios: { fault: string; raises: RegExp; run: (setup: Setup, consume: () => Promise<RateLimitDecision>) => Promise<RateLimitDecision> }[] = [
    {
      fault: 'reset while a command is pending',
      raises: /^MaxRetriesPerRequestError: Reached the max retries per request limit/,
      run: ({ proxy }, consume) => {
        proxy.set('reset');
        return consume();
      },
    },
    {
      fault: 'refused (closed) while a command is pending',
      raises: /^MaxRetriesPerRequestError: Reached the max retries per request limit/,
      run: ({ proxy }, consume) => {
        proxy.set('blackhole');
        const pending = consume(); // written to the socket at once: the proxy swallows it
        proxy.set('refuse');
        return pending;
      },
    },
    {
      fault: 'blackholed while a command is pending',
      raises: /^Error: Command timed out$/,
      run: ({ proxy }, consume) => {
        proxy.set('blackhole');
        return consume();
      },
    },
    {
      fault: 'refused, the client reconnecting',
      raises: /^Error: Stream isn't writeable and enableOfflineQueue options is false$/,
      run: async ({ proxy, redis }, consume) => {
        proxy.set('refuse');
        await waitFor('the client to notice the lost connection', () => redis.status !== 'ready');
        return consume();
      },
    },
    {
      fault: 'blackholed while connecting',
      raises: /^Error: Stream isn't writeable and enableOfflineQueue options is false$/,
      run: async ({ proxy, redis }, consume) => {
        proxy.set('blackhole');
        const accepted = proxy.connections;
        redis.disconnect(true);
        await waitFor('the client to connect into the blackhole', () => proxy.connections > accepted && redis.status === 'connect');
        return consume();
      },
    },
    {
      fault: 'reset while connecting',
      raises: /^Error: Stream isn't writeable and enableOfflineQueue options is false$/,
      run: async ({ proxy, redis }, consume) => {
        proxy.set('reset');
        const resets = proxy.resets;
        redis.disconnect(true);
        await waitFor('the proxy to reset the handshake', () => proxy.resets > resets);
        return consume();
      },
    },
    {
      fault: 'the client closed',
      raises: /^Error: Connection is closed\.$/,
      run: async ({ redis }, consume) => {
        redis.disconnect();
        await waitFor('the client to end', () => redis.status === 'end');
        return consume();
      },
    },
  ];

  for (const scenario of scenarios) {
    for (const policy of POLICIES) {
      it(`${scenario.fault}: ${policy === 'fail-closed' ? '503 with Retry-After' : 'the replica\'s memory'} under ${policy}`, { timeout: 3 * BOUND_MS }, async () => {
        const setup = await limiterThroughProxy();
        try {
          const { guard, lines } = guardFor(policy, 'rate_limiter', isRedisOutage);
          let raw: unknown;
          const spied = {
            consume: (clientId: string, plan: Plan) => setup.limiter.consume(clientId, plan).catch((error: unknown) => Promise.reject((raw = error))),
            peek: (clientId: string, plan: Plan) => setup.limiter.peek(clientId, plan),
            healthy: () => setup.limiter.healthy(),
          };
          const limiter = new GuardedRateLimiter(spied, guard, 0.5);
          const outcome = (await Promise.allSettled([scenario.run(setup, () => limiter.consume('c', PLAN))]))[0]!;
          assert.match(show(raw), scenario.raises, 'the fault raised the error class this scenario is about');
          // The fallback grants half of the plan: its decisions say so.
          assertOutageAnswered(policy, { outcome, raw }, guard, lines, (decision) => decision.policies[0]?.limit === PLAN.burst / 2);
        } finally {
          await setup.close();
        }
      });
    }
  }

  it('recovers by itself once a black hole ends: commands lost in it never leave the connection waiting for their replies', { timeout: 6 * BOUND_MS }, async () => {
    const setup = await limiterThroughProxy();
    try {
      setup.proxy.set('blackhole');
      await assert.rejects(setup.limiter.consume('c', PLAN), /timed out/);
      await assert.rejects(setup.limiter.consume('c', PLAN));
      setup.proxy.set('up');
      // Before the fix, every command after this timed out for good: replies went to the lost ones.
      const deadline = Date.now() + 3 * BOUND_MS;
      for (;;) {
        const answer = await setup.limiter.consume('c', PLAN).then(
          (decision) => decision,
          () => undefined,
        );
        if (answer?.allowed) break;
        assert.ok(Date.now() < deadline, 'Redis answered again within the bound');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await setup.close();
    }
  });

  for (const policy of POLICIES) {
    it(`a script error or a reply it cannot parse is 503 for that request alone under ${policy}, and the store stays up`, { timeout: 3 * BOUND_MS }, async () => {
      const setup = await limiterThroughProxy();
      try {
        const { guard, lines } = guardFor(policy, 'rate_limiter', isRedisOutage);
        const limiter = new GuardedRateLimiter(setup.limiter, guard, 0.5);
        // The client's key holds a string: the script's HMGET fails, and Redis answers with an error reply.
        await setup.redis.set(rateLimitKey(prefix, 'wrong-type'), 'x');
        await assert.rejects(limiter.consume('wrong-type', PLAN), (error: unknown) => error instanceof StoreUnavailable && error.status === 503);
        // A plan the script cannot read makes it answer what the limiter cannot parse: a bug, not an outage.
        await assert.rejects(limiter.consume('c', { ...PLAN, burst: Number.NaN }), (error: unknown) => error instanceof StoreUnavailable && error.status === 503);
        assert.equal(guard.status, 'up');
        assert.deepEqual(
          lines.filter((line) => line['event'] === 'store.error').map((line) => line['error']),
          ['ReplyError', 'UnexpectedScriptReply'],
        );
        assert.equal((await limiter.consume('c', PLAN)).allowed, true, 'the next request reaches Redis');
      } finally {
        await setup.close();
      }
    });
  }
});

describe('PostgreSQL faults through a proxy, under both policies', { skip: skipUnlessEngines(['postgres']) }, () => {
  const database = withTestDatabase();
  const schema = database.schema('test_outage');
  let keys = 0;
  const newKey = () => `k-${(keys += 1)}`;

  /** The store as open.ts opens it, through a proxy; one connection left idle in its pool. */
  async function storeThroughProxy(statementTimeoutMs: number) {
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
    try {
      const store = await PostgresIdempotencyStore.open({ connectionString: url, schema, clock: 'database', statementTimeoutMs });
      return {
        proxy,
        store,
        close: async () => {
          await proxy.close();
          await store.close();
        },
      };
    } catch (error) {
      await proxy.close();
      throw error;
    }
  }

  /** Holds the table locked from outside the proxy, so that the store's next statement waits on the server. */
  async function lockTable(): Promise<{ waiting: () => Promise<boolean>; unlock: () => Promise<void> }> {
    const locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    locker.on('error', () => {});
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE "${schema}".idempotency_keys IN ACCESS EXCLUSIVE MODE`);
    return {
      waiting: async () => (await database.admin().query(`SELECT 1 FROM pg_locks WHERE NOT granted AND relation = '"${schema}".idempotency_keys'::regclass`)).rowCount! > 0,
      unlock: async () => {
        await locker.query('ROLLBACK').catch(() => {});
        await locker.end().catch(() => {});
      },
    };
  }

  type Setup = Awaited<ReturnType<typeof storeThroughProxy>>;
  const scenarios: { fault: string; statementTimeoutMs?: number; raises: RegExp; run: (setup: Setup, claim: () => Promise<string>) => Promise<string> }[] = [
    {
      fault: 'reset while a query is sent',
      raises: /ECONNRESET/,
      run: ({ proxy }, claim) => {
        proxy.set('reset');
        return claim();
      },
    },
    {
      fault: 'blackholed while a query is pending',
      raises: /^Error: Query read timeout$/,
      run: ({ proxy }, claim) => {
        proxy.set('blackhole');
        return claim();
      },
    },
    {
      fault: 'refused (closed) while a query runs on the server',
      statementTimeoutMs: BOUND_MS,
      raises: /^Error: Connection terminated unexpectedly$/,
      run: async ({ proxy }, claim) => {
        const lock = await lockTable();
        try {
          const pending = claim();
          // It may fail before the fault below has answered: handled now, awaited below (an unhandled rejection fails the test).
          pending.catch(() => {});
          await waitFor('the claim to wait on the lock', lock.waiting);
          proxy.set('refuse');
          return await pending;
        } finally {
          await lock.unlock();
        }
      },
    },
    {
      fault: 'the server terminating the connection while a query runs',
      statementTimeoutMs: BOUND_MS,
      raises: /terminating connection due to administrator command \(57P01\)/,
      run: async (_setup, claim) => {
        const lock = await lockTable();
        try {
          const pending = claim();
          // It may fail before the fault below has answered: handled now, awaited below (an unhandled rejection fails the test).
          pending.catch(() => {});
          await waitFor('the claim to wait on the lock', lock.waiting);
          await database.admin().query(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE NOT granted AND relation = '"${schema}".idempotency_keys'::regclass`);
          return await pending;
        } finally {
          await lock.unlock();
        }
      },
    },
    {
      fault: 'the server cancelling a stuck query (statement_timeout)',
      raises: /canceling statement due to statement timeout \(57014\)/,
      run: async (_setup, claim) => {
        const lock = await lockTable();
        try {
          return await claim();
        } finally {
          await lock.unlock();
        }
      },
    },
    ...(['blackhole', 'reset', 'refuse'] as const).map((mode) => ({
      fault: `${mode === 'blackhole' ? 'blackholed' : mode === 'reset' ? 'reset' : 'refused'} while connecting`,
      raises:
        mode === 'blackhole'
          ? /^Error: (timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/
          : mode === 'reset'
            ? /ECONNRESET|^Error: Connection terminated unexpectedly$/
            : /^Error: Connection terminated unexpectedly$/,
      run: async ({ proxy, store }: Setup, claim: () => Promise<string>) => {
        // Empties the pool first: its idle connection fails, and a new one is refused.
        proxy.set('refuse');
        await assert.rejects(store.claim('c', newKey(), 'fp'));
        proxy.set(mode);
        return claim();
      },
    })),
  ];

  for (const scenario of scenarios) {
    for (const policy of POLICIES) {
      it(`${scenario.fault}: ${policy === 'fail-closed' ? '503 with Retry-After' : 'the replica\'s memory'} under ${policy}`, { timeout: 3 * BOUND_MS }, async () => {
        const setup = await storeThroughProxy(scenario.statementTimeoutMs ?? 300);
        try {
          const { guard, lines } = guardFor(policy, 'idempotency', isPostgresOutage);
          let raw: unknown;
          const key = newKey();
          const claim = () =>
            guard.use(
              () => setup.store.claim('c', key, 'fp').then(() => 'shared', (error: unknown) => Promise.reject((raw = error))),
              async () => 'fallback',
            );
          const outcome = (await Promise.allSettled([scenario.run(setup, claim)]))[0]!;
          assert.match(show(raw), scenario.raises, 'the fault raised the error class this scenario is about');
          assertOutageAnswered(policy, { outcome, raw }, guard, lines, (value) => value === 'fallback');
        } finally {
          await setup.close();
        }
      });
    }
  }

  for (const policy of POLICIES) {
    it(`a statement the server rejects is 503 for that request alone under ${policy}, and the store stays up`, { timeout: 3 * BOUND_MS }, async () => {
      const setup = await storeThroughProxy(300);
      try {
        const { guard, lines } = guardFor(policy, 'idempotency', isPostgresOutage);
        const claim = (key: string) => guard.use(() => setup.store.claim('c', key, 'fp').then(() => 'shared'), async () => 'fallback');
        // text cannot hold NUL: the server rejects the statement (22021), the connection is fine.
        await assert.rejects(claim('k\u0000nul'), (error: unknown) => error instanceof StoreUnavailable && error.status === 503);
        assert.equal(guard.status, 'up');
        assert.equal(lines.find((line) => line['event'] === 'store.error')?.['code'], '22021');
        assert.equal(await claim(newKey()), 'shared', 'the next request reaches PostgreSQL');
      } finally {
        await setup.close();
      }
    });
  }
});
