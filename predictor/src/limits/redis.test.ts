import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { requireRedis, TEST_REDIS_URL } from '../testing/engines.js';
import { rateLimitHeaders } from './headers.js';
import { MemoryRateLimiter } from './memory.js';
import type { Plan } from './plans.js';
import { secondsToNextUtcMidnight, utcDay, type PolicyName, type RateLimitDecision } from './rate-limiter.js';
import { RedisRateLimiter, rateLimitKey } from './redis.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

const FREE: Plan = { name: 'free', burst: 6, refillPerSecond: 2, dailyQuota: 1000 };
/** A plan whose daily quota runs out long before the bucket does. */
const TINY_DAILY: Plan = { name: 'tiny-daily', burst: 10, refillPerSecond: 10, dailyQuota: 3 };
/** One token per 1000 s: the time a test takes refills nothing that counts. */
const SLOW: Plan = { name: 'slow', burst: 30, refillPerSecond: 0.001, dailyQuota: 100_000 };

// Redis keeps its own clock, so these tests never sleep: they read TIME, or write a state as of a known time.
describe('RedisRateLimiter', { skip: skipUnlessEngines(['redis']) }, () => {
  const prefix = `test:rl:${process.pid}:${randomBytes(4).toString('hex')}:`;
  let redis: Redis;
  let limiter: RedisRateLimiter;
  let clientCount = 0;
  /** A client id no other test uses. */
  const newClient = (label = 'c') => `${label}-${(clientCount += 1)}`;

  async function redisNowMs(): Promise<number> {
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  function remaining(decision: RateLimitDecision, policy: PolicyName): number | undefined {
    return decision.policies.find((p) => p.name === policy)?.remaining;
  }

  before(async () => {
    await requireRedis();
    redis = new Redis(TEST_REDIS_URL);
    limiter = new RedisRateLimiter({ redis, keyPrefix: prefix });
  });

  after(async () => {
    if (!redis) return;
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    await redis.quit();
  });

  it('admits exactly the burst of 100 concurrent requests', async () => {
    const client = newClient();
    const decisions = await Promise.all(Array.from({ length: 100 }, () => limiter.consume(client, FREE)));
    assert.equal(decisions.filter((d) => d.allowed).length, 6);
    const denied = decisions.find((d) => !d.allowed);
    assert.equal(denied?.violated, 'burst');
    assert.equal(denied?.retryAfterSeconds, 1, 'one token takes 0.5 s on free, rounded up');
    assert.equal(remaining(await limiter.peek(client, FREE), 'daily'), FREE.dailyQuota - 6, 'denials took nothing from the daily quota');
  });

  it('shares the bucket between two replicas with their own connections', async () => {
    const other = new Redis(TEST_REDIS_URL);
    try {
      const replicaA = limiter;
      const replicaB = new RedisRateLimiter({ redis: other, keyPrefix: prefix });
      const client = newClient();
      for (let i = 0; i < 4; i += 1) assert.equal((await replicaA.consume(client, SLOW)).allowed, true);
      const fromB = await replicaB.consume(client, SLOW);
      assert.equal(remaining(fromB, 'burst'), SLOW.burst - 5);
      assert.equal(remaining(fromB, 'daily'), SLOW.dailyQuota - 5);
      const both = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? replicaA : replicaB).consume(client, SLOW)));
      assert.equal(both.filter((d) => d.allowed).length, SLOW.burst - 5);
    } finally {
      await other.quit();
    }
  });

  it('denies an exhausted daily quota until the next UTC midnight of the Redis clock', async () => {
    const client = newClient();
    for (let i = 0; i < 3; i += 1) assert.equal((await limiter.consume(client, TINY_DAILY)).allowed, true);
    const startMs = await redisNowMs();
    const denied = await limiter.consume(client, TINY_DAILY);
    const endMs = await redisNowMs();
    assert.equal(denied.allowed, false);
    assert.equal(denied.violated, 'daily');
    assert.equal(remaining(denied, 'daily'), 0);
    assert.equal(remaining(denied, 'burst'), TINY_DAILY.burst - 3, 'the daily denial took no token');
    const retry = denied.retryAfterSeconds ?? Number.NaN;
    assert.ok(retry <= secondsToNextUtcMidnight(startMs) && retry >= secondsToNextUtcMidnight(endMs), `Retry-After ${retry}`);
  });

  it('starts a new daily count on a new UTC day', async () => {
    const client = newClient();
    const nowMs = await redisNowMs();
    await redis.hset(rateLimitKey(prefix, client), { tokens: '10', ts: String(nowMs), day: String(utcDay(nowMs) - 1), used: '3' });
    const decision = await limiter.consume(client, TINY_DAILY);
    assert.equal(decision.allowed, true);
    assert.equal(remaining(decision, 'daily'), TINY_DAILY.dailyQuota - 1);
  });

  it('refills continuously from the time it saved, by the Redis clock', async () => {
    const client = newClient();
    const key = rateLimitKey(prefix, client);
    const nowMs = await redisNowMs();
    // Empty 1000 s ago: exactly one token is back, and the next takes another 1000 s.
    await redis.hset(key, { tokens: '0', ts: String(nowMs - 1_000_000), day: String(utcDay(nowMs)), used: '30' });
    assert.equal(remaining(await limiter.peek(client, SLOW), 'burst'), 1);
    assert.equal((await limiter.consume(client, SLOW)).allowed, true);
    const denied = await limiter.consume(client, SLOW);
    assert.deepEqual([denied.allowed, denied.violated], [false, 'burst']);
    assert.ok((denied.retryAfterSeconds ?? 0) > 990 && (denied.retryAfterSeconds ?? 0) <= 1000, `Retry-After ${denied.retryAfterSeconds}`);
  });

  it('refills nothing, and drains nothing, when the saved time is ahead of the Redis clock', async () => {
    const client = newClient();
    const nowMs = await redisNowMs();
    await redis.hset(rateLimitKey(prefix, client), { tokens: '3', ts: String(nowMs + 60_000), day: String(utcDay(nowMs)), used: '0' });
    assert.equal(remaining(await limiter.peek(client, FREE), 'burst'), 3);
  });

  it('peek charges nothing and creates no key', async () => {
    const unknown = newClient();
    const fresh = await limiter.peek(unknown, SLOW);
    assert.equal(fresh.allowed, true);
    assert.equal(remaining(fresh, 'burst'), SLOW.burst);
    assert.equal(remaining(fresh, 'daily'), SLOW.dailyQuota);
    assert.equal(await redis.exists(rateLimitKey(prefix, unknown)), 0);

    const client = newClient();
    const key = rateLimitKey(prefix, client);
    await limiter.consume(client, SLOW);
    const saved = await redis.hgetall(key);
    for (let i = 0; i < 50; i += 1) await limiter.peek(client, SLOW);
    const peeked = await limiter.peek(client, SLOW);
    assert.equal(peeked.allowed, true);
    assert.equal(remaining(peeked, 'burst'), SLOW.burst - 1);
    assert.equal(remaining(peeked, 'daily'), SLOW.dailyQuota - 1);
    assert.deepEqual(await redis.hgetall(key), saved, 'peek writes nothing');
  });

  it('peek of a spent bucket says the next request would be refused', async () => {
    const client = newClient();
    for (let i = 0; i < SLOW.burst; i += 1) await limiter.consume(client, SLOW);
    const peeked = await limiter.peek(client, SLOW);
    assert.deepEqual([peeked.allowed, peeked.violated], [false, 'burst']);
  });

  it('expires a key once it would read like a fresh client: at the next UTC midnight', async () => {
    const client = newClient();
    const decision = await limiter.consume(client, FREE);
    const pttl = await redis.pttl(rateLimitKey(prefix, client));
    const dailyReset = decision.policies.find((p) => p.name === 'daily')?.resetSeconds ?? Number.NaN;
    assert.ok(pttl > 0 && pttl <= dailyReset * 1000, `PTTL ${pttl} ms, daily reset in ${dailyReset} s`);
  });

  it('expires a key once it would read like a fresh client: when the bucket is full, if later', async () => {
    const glacial: Plan = { name: 'glacial', burst: 2, refillPerSecond: 1e-6, dailyQuota: 1000 };
    const client = newClient();
    await limiter.consume(client, glacial);
    const pttl = await redis.pttl(rateLimitKey(prefix, client));
    assert.ok(pttl > 86_400_000 && pttl <= 1_000_000_000, `PTTL ${pttl} ms, one token in 10^9 ms`);
  });

  it('gives the same headers as the memory limiter', async () => {
    const memory = new MemoryRateLimiter({ now: () => Date.UTC(2025, 5, 1, 12, 0, 0) });
    // Only the time to midnight may differ: memory's clock is fixed at noon.
    const dailyT = /"daily";r=(\d+);t=\d+/;
    const withoutDailyT = (headers: Record<string, string>) => ({ ...headers, RateLimit: headers['RateLimit']?.replace(dailyT, '"daily";r=$1;t=T') });
    async function assertSameHeaders(plan: Plan, requests: number): Promise<Record<string, string>> {
      const client = newClient();
      let fromRedis: RateLimitDecision | undefined;
      let fromMemory: RateLimitDecision | undefined;
      for (let i = 0; i < requests; i += 1) [fromRedis, fromMemory] = await Promise.all([limiter.consume(client, plan), memory.consume(client, plan)]);
      const redisHeaders = rateLimitHeaders(fromRedis!);
      assert.match(redisHeaders['RateLimit'] ?? '', dailyT);
      assert.deepEqual(withoutDailyT(redisHeaders), withoutDailyT(rateLimitHeaders(fromMemory!)));
      return redisHeaders;
    }

    const admitted = await assertSameHeaders(SLOW, 7);
    assert.equal(admitted['X-RateLimit-Remaining'], '23');
    assert.equal(admitted['RateLimit-Policy'], '"burst";q=30;w=30000, "daily";q=100000;w=86400');
    const denied = await assertSameHeaders(FREE, FREE.burst + 1);
    assert.equal(denied['Retry-After'], '1');
    assert.equal(denied['X-RateLimit-Limit'], '6');
  });

  it('puts the client id in one well-formed hash tag, even when the id has braces', async () => {
    for (const id of ['plain', 'a{b}c', '}{', '{}', 'ünï côdé/%']) {
      const client = `${newClient()}${id}`;
      await limiter.consume(client, FREE);
      const key = rateLimitKey(prefix, client);
      assert.equal(await redis.exists(key), 1, `${key} exists`);
      // Redis hashes what lies between the first { and the next }.
      const open = key.indexOf('{');
      const close = key.indexOf('}', open);
      assert.equal(key.slice(0, open), prefix);
      assert.equal(close, key.length - 1, 'the tag ends the key');
      assert.equal(decodeURIComponent(key.slice(open + 1, close)), client);
    }
    assert.notEqual(rateLimitKey(prefix, 'a{b'), rateLimitKey(prefix, 'a%7Bb'));
  });

  it('rejects a key prefix that would move the hash tag', () => {
    assert.throws(() => new RedisRateLimiter({ redis, keyPrefix: 'm2m:{rl}:' }), RangeError);
  });

  it('rejects when Redis fails, and leaves the failure policy to the caller', async () => {
    const client = newClient();
    await redis.set(rateLimitKey(prefix, client), 'not a hash');
    await assert.rejects(limiter.consume(client, FREE), /WRONGTYPE/);
  });

  it('leaves an injected client open on close, and quits one it owns', { timeout: 5_000 }, async () => {
    const borrowed = new Redis(TEST_REDIS_URL);
    const owned = new Redis(TEST_REDIS_URL);
    try {
      await new RedisRateLimiter({ redis: borrowed, keyPrefix: prefix }).close();
      assert.equal(await borrowed.ping(), 'PONG');
      const ended = once(owned, 'end');
      await new RedisRateLimiter({ redis: owned, keyPrefix: prefix, ownsClient: true }).close();
      await ended;
    } finally {
      await borrowed.quit();
      owned.disconnect();
    }
  });
});
