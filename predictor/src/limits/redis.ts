import type { Redis } from 'ioredis';
import type { Plan } from './plans.js';
import { TOKEN_EPSILON, decisionFor, type RateLimitDecision, type RateLimiter } from './rate-limiter.js';

export interface RedisRateLimiterOptions {
  /** The connection to use. The caller owns it: `close()` leaves it open unless `ownsClient` is set. */
  redis: Redis;
  /** Prefix of every key. Must not contain `{` or `}`, which would move the hash tag. Default `m2m:rl:`. */
  keyPrefix?: string;
  /** Whether `close()` quits `redis`. Default false. */
  ownsClient?: boolean;
}

/**
 * One client, one call: catches up the bucket and the daily count, decides over both, charges both
 * or neither, writes back. KEYS[1]: the client's hash. ARGV: burst, refill per second, daily quota,
 * charge (1 or 0), epsilon. Returns allowed (1/0), tokens, used and the server time in ms, numbers
 * as strings because Redis would truncate Lua numbers to integers.
 */
const DECIDE_LUA = `
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local charge = ARGV[4] == '1'
local epsilon = tonumber(ARGV[5])
local DAY_MS = 86400000
local function num(x) return string.format('%.17g', x) end

-- The server's clock, not the caller's: replicas sharing a bucket must not disagree about time.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local today = math.floor(now / DAY_MS)

local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'day', 'used')
local tokens = tonumber(saved[1]) or burst
local ts = tonumber(saved[2]) or now
local day = tonumber(saved[3]) or today
local used = tonumber(saved[4]) or 0

-- A clock that steps backwards refills nothing rather than draining the bucket.
tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000 * rate)
ts = math.max(ts, now)
if today > day then
  day = today
  used = 0
end

local allowed = math.floor(tokens + epsilon) >= 1 and used < quota
-- Only a charge changes the state: the catch-up is recomputed from the saved state on every call,
-- so peeks and denials write nothing, and a peek never creates a key.
if allowed and charge then
  tokens = tokens - 1
  used = used + 1
  redis.call('HSET', KEYS[1], 'tokens', num(tokens), 'ts', num(ts), 'day', num(day), 'used', num(used))
  -- Gone once it reads like a fresh client (bucket full, today's count over): idle clients cost nothing.
  local fullAt = ts + math.ceil((burst - tokens) / rate * 1000)
  local dayOverAt = (day + 1) * DAY_MS
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.max(fullAt, dayOverAt) - now))
end
return { allowed and 1 or 0, num(tokens), num(used), num(now) }
`;

// Named for this project so that it cannot clash with other commands defined on a shared client.
const COMMAND = 'm2mRateLimitDecide';

type DecideCommand = (key: string, burst: string, rate: string, quota: string, charge: '1' | '0', epsilon: string) => Promise<unknown>;

/**
 * The key of a client's state. The id is the hash tag, so a Redis Cluster keeps all of a client's
 * keys on one slot; it is URI-encoded so that a `{` or `}` in it cannot end the tag early.
 */
export function rateLimitKey(keyPrefix: string, clientId: string): string {
  return `${keyPrefix}{${encodeURIComponent(clientId)}}`;
}

/**
 * Token bucket and daily quota per client in Redis, shared by every predictor replica: each request
 * is one Lua script, so the decision over both policies is atomic. Redis errors reject; the caller
 * decides whether to fail open or closed.
 */
export class RedisRateLimiter implements RateLimiter {
  readonly #redis: Redis;
  readonly #keyPrefix: string;
  readonly #ownsClient: boolean;
  readonly #decide: DecideCommand;

  constructor(options: RedisRateLimiterOptions) {
    this.#redis = options.redis;
    this.#keyPrefix = options.keyPrefix ?? 'm2m:rl:';
    this.#ownsClient = options.ownsClient ?? false;
    if (/[{}]/.test(this.#keyPrefix)) throw new RangeError(`keyPrefix must not contain { or }, got ${JSON.stringify(this.#keyPrefix)}`);
    // defineCommand runs the script with EVALSHA and falls back to EVAL when Redis does not know it yet.
    this.#redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: DECIDE_LUA });
    const command = (this.#redis as unknown as Record<string, DecideCommand | undefined>)[COMMAND];
    if (!command) throw new Error(`ioredis did not define ${COMMAND}`);
    this.#decide = command.bind(this.#redis);
  }

  async consume(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.#run(clientId, plan, true);
  }

  async peek(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.#run(clientId, plan, false);
  }

  /** PING: false while Redis is unreachable (the client fails fast when it has no offline queue). */
  async healthy(): Promise<boolean> {
    return this.#redis.ping().then(
      (reply) => reply === 'PONG',
      () => false,
    );
  }

  async close(): Promise<void> {
    if (this.#ownsClient) await this.#redis.quit();
  }

  async #run(clientId: string, plan: Plan, charge: boolean): Promise<RateLimitDecision> {
    const reply = await this.#decide(
      rateLimitKey(this.#keyPrefix, clientId),
      String(plan.burst),
      String(plan.refillPerSecond),
      String(plan.dailyQuota),
      charge ? '1' : '0',
      String(TOKEN_EPSILON),
    );
    const { allowed, tokens, used, nowMs } = parseReply(reply);
    return decisionFor(plan, { tokens, used }, nowMs, allowed);
  }
}

function parseReply(reply: unknown): { allowed: boolean; tokens: number; used: number; nowMs: number } {
  if (Array.isArray(reply) && reply.length === 4) {
    const [allowed, ...numbers] = reply as unknown[];
    const [tokens, used, nowMs] = numbers.map((n) => (typeof n === 'string' ? Number(n) : Number.NaN));
    if ((allowed === 0 || allowed === 1) && [tokens, used, nowMs].every(Number.isFinite)) {
      return { allowed: allowed === 1, tokens: tokens!, used: used!, nowMs: nowMs! };
    }
  }
  throw new UnexpectedScriptReply(reply);
}

/**
 * The script answered something it never returns: a bug (or another script under the same
 * name), not an outage. A TypeError, so the failure policy fails only this request.
 */
export class UnexpectedScriptReply extends TypeError {
  override name = 'UnexpectedScriptReply';
  constructor(reply: unknown) {
    super(`unexpected reply from the rate-limit script: ${JSON.stringify(reply)}`);
  }
}
