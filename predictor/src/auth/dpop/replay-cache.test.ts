import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '@m2m/common';
import { createMetrics } from '../../http/metrics.js';
import { InvalidDpopProof, StoreUnavailable } from '../../http/problems.js';
import { GuardedProofReplayCache, StoreGuard } from '../../stores/failure-policy.js';
import { isRedisOutage } from '../../stores/outage.js';
import { createDpopKey, dpopProof } from '../../testing/dpop-proofs.js';
import { requireRedis, TEST_REDIS_URL } from '../../testing/engines.js';
import { createDpopProofVerifier } from './proof.js';
import { MemoryProofReplayCache, proofReplayKey } from './replay-cache.js';
import { RedisProofReplayCache } from './replay-cache-redis.js';
import { skipUnlessEngines } from '../../../../common/src/testing/skip-unless-engines.js';

describe('MemoryProofReplayCache', () => {
  it('answers true once per key until the key expires, then forgets it', async () => {
    let now = 1_000_000;
    const cache = new MemoryProofReplayCache({ now: () => now });
    assert.equal(await cache.firstUse('a', now + 10_000), true);
    assert.equal(await cache.firstUse('a', now + 10_000), false);
    now += 10_001;
    assert.equal(await cache.firstUse('b', now + 10_000), true);
    assert.equal(cache.size, 1, 'the expired entry was swept');
    assert.equal(await cache.firstUse('a', now + 10_000), true);
  });

  it('refuses (503 upstream) rather than forget a live proof when full', async () => {
    const cache = new MemoryProofReplayCache({ maxEntries: 2, now: () => 0 });
    await cache.firstUse('a', 1_000);
    await cache.firstUse('b', 1_000);
    await assert.rejects(cache.firstUse('c', 1_000), /holds 2 live proofs/);
    assert.equal(await cache.firstUse('a', 1_000), false);
  });

  it('keys a jti under the key that signed the proof', () => {
    assert.notEqual(proofReplayKey('thumb-a', 'jti'), proofReplayKey('thumb-b', 'jti'));
    assert.match(proofReplayKey('thumb-a', 'x'.repeat(500)), /^[\w-]{43}$/);
  });
});

describe('RedisProofReplayCache: a proof accepted by one predictor is refused by another (SET NX PX)', { skip: skipUnlessEngines(['redis']) }, () => {
  const prefix = `test:dpop:${process.pid}:${randomBytes(4).toString('hex')}:dpop-jti:`;
  let redisA: Redis;
  let redisB: Redis;

  before(async () => {
    await requireRedis();
    redisA = new Redis(TEST_REDIS_URL);
    redisB = new Redis(TEST_REDIS_URL);
  });
  after(async () => {
    const keys = await redisA.keys(`${prefix}*`);
    if (keys.length > 0) await redisA.del(...keys);
    redisA.disconnect();
    redisB.disconnect();
  });

  it('stores the key with an expiry and answers false to the second predictor', async () => {
    const now = Date.now();
    const a = new RedisProofReplayCache({ redis: redisA, keyPrefix: prefix, now: () => now });
    const b = new RedisProofReplayCache({ redis: redisB, keyPrefix: prefix, now: () => now });
    assert.equal(await a.firstUse('k1', now + 66_000), true);
    assert.equal(await b.firstUse('k1', now + 66_000), false);
    const ttl = await redisA.pttl(`${prefix}k1`);
    assert.ok(ttl > 60_000 && ttl <= 66_000, `ttl ${ttl}`);
  });

  it('of two predictors given the same proof at once, exactly one accepts it', async () => {
    const key = await createDpopKey();
    const token = 'header.payload.signature';
    const verifierOn = (redis: Redis) =>
      createDpopProofVerifier({ algorithms: ['ES256'], publicUrl: 'https://predictor.test', clockToleranceSeconds: 5, replayCache: new RedisProofReplayCache({ redis, keyPrefix: prefix }) });
    const [predictorA, predictorB] = [verifierOn(redisA), verifierOn(redisB)];
    for (let round = 0; round < 20; round += 1) {
      const proof = await dpopProof(key, { htm: 'POST', htu: 'https://predictor.test/v1/predict', accessToken: token });
      const request = { proof, method: 'POST', path: '/v1/predict', accessToken: token, boundThumbprint: key.thumbprint };
      const outcomes = await Promise.allSettled([predictorA(request), predictorB(request)]);
      assert.equal(outcomes.filter((outcome) => outcome.status === 'fulfilled').length, 1, `round ${round}`);
      const refused = outcomes.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult;
      assert.ok(refused.reason instanceof InvalidDpopProof);
      assert.match(refused.reason.detail, /used already/);
    }
  });

  it('fails closed (503) while Redis is unreachable, or falls back to this replica\'s memory under degrade', async () => {
    const down = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    down.on('error', () => {});
    const logger = createLogger('predictor', 'silent');
    const guarded = (policy: 'fail-closed' | 'degrade') =>
      new GuardedProofReplayCache(
        new RedisProofReplayCache({ redis: down, keyPrefix: prefix }),
        new StoreGuard({ store: 'dpop_replay', engine: 'redis', policy, isOutage: isRedisOutage, logger, metrics: createMetrics({ collectProcessMetrics: false }) }),
      );
    await assert.rejects(guarded('fail-closed').firstUse('k2', Date.now() + 60_000), (error: unknown) => error instanceof StoreUnavailable && /DPoP replay store/.test(error.detail));
    const degraded = guarded('degrade');
    assert.equal(await degraded.firstUse('k3', Date.now() + 60_000), true);
    assert.equal(await degraded.firstUse('k3', Date.now() + 60_000), false);
    down.disconnect();
  });
});
