import { systemClock, type Clock } from '../retry/clock.js';
import type { PolicyReport } from './rate-limit-fields.js';

export interface RateLimitViewOptions {
  clock?: Clock;
  /**
   * Longest window (in seconds) read as a token bucket refilling `q` every `w`; a policy with a
   * longer window, or without `w` and `q`, is read as a fixed window (a quota). Default 60.
   */
  bucketWindowMaxSeconds?: number;
}

export interface RoomRequest {
  /** Aborting removes the call from the queue at once; the promise rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Longest wait for room the call accepts (in milliseconds); a longer one refuses at once with `NoRoomError`. */
  maxWaitMs: number;
  /** The call's deadline on the clock's monotonic time (`clock.now()`); `Infinity` when it has none. */
  deadlineAt: number;
}

/** One send the view has made room for. Settle it exactly once, with what its answer said. */
export interface Permit {
  /** How long the call waited in the queue (in milliseconds). */
  readonly waitedMs: number;
  /** `answered`: an HTTP answer came (whatever its status); `policies`: its rate-limit fields, if any. */
  settle(outcome: { answered: boolean; policies: PolicyReport[] | undefined }): void;
}

/** The server's limits leave no room within what the call accepts to wait. */
export class NoRoomError extends Error {
  override name = 'NoRoomError';

  constructor(
    /** The policy that keeps the call waiting longest. */
    readonly policy: string,
    /** Until that policy has room again (in milliseconds). */
    readonly waitMs: number,
    readonly why: 'beyond-wait-cap' | 'beyond-deadline',
  ) {
    super(`no room in policy ${policy} for ${Math.round(waitMs)} ms (${why})`);
  }
}

/** Float arithmetic may leave 0.9999999 where a whole unit has come back. */
const LEVEL_EPSILON = 1e-9;

/** What this client knows of one of the server's policies. */
interface PolicyMirror {
  quota: number | undefined;
  /** The most the server ever reported left: a lower bound of the quota when `quota` is not sent. */
  largestSeen: number;
  /** Units per millisecond a bucket policy gets back (q / w); 0 for a fixed window. */
  refillPerMs: number;
  /** Units this client may still send, as of `levelAt`; below 1 means wait. */
  level: number;
  levelAt: number;
  /** When the policy has its whole quota again (monotonic ms); undefined until an answer says. */
  resetAt: number | undefined;
  /** The send whose answer `level` and `resetAt` come from. */
  appliedSeq: number;
  /** The first send after the last reset: answers to earlier sends describe a window that is over. */
  epochSeq: number;
}

interface Waiter {
  request: RoomRequest;
  enqueuedAt: number;
  resolve: (permit: Permit) => void;
  reject: (error: unknown) => void;
}

type Verdict = { kind: 'send' } | { kind: 'await-answer' } | { kind: 'wait-until'; atMs: number; policy: string };

/**
 * One client's view of the server's rate limits, mirrored from the rate-limit fields of every
 * answer, and the queue its calls wait in for room (first come, first served).
 *
 * Each policy holds a level: what this client may still send. An answer sets it to the answer's
 * `r` less the requests still in flight (the server may not have counted them yet; counting one
 * it has is only cautious), when the answer is the newest in send order. Every send takes one.
 * - A short window (`w` up to a minute: the predictor's burst, 30 per 3 s) is read as the token
 *   bucket it mirrors: the level grows by `q` every `w`, up to `q` less what is in flight. The
 *   predictor's `w` is the bucket's fill time rounded up, so `q / w` never exceeds its refill.
 * - A long window, or a policy without `q` and `w` (`X-RateLimit-*`), is read as a fixed window
 *   (a daily quota): nothing comes back before `t`, then the whole quota.
 * - A fixed window has its whole quota back `t` seconds after the answer (counted from its
 *   arrival, which errs late); answers to sends made before such a reset are not applied any
 *   more. A bucket's `t` is not used: it did not count the requests in flight.
 * Until the first answer, and whenever a policy is empty with no reset known, one request at a
 * time goes out to learn the limits.
 */
export class RateLimitView {
  readonly #clock: Clock;
  readonly #bucketWindowMaxSeconds: number;
  readonly #policies = new Map<string, PolicyMirror>();
  readonly #queue: Waiter[] = [];
  /** Whether any HTTP answer came yet; before it, the limits are unknown. */
  #answered = false;
  #sent = 0;
  #inFlight = 0;
  /** Sends settled so far (answered or not). */
  #settled = 0;
  #pumping = false;
  #wake: (() => void) | undefined;

  constructor(options: RateLimitViewOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#bucketWindowMaxSeconds = options.bucketWindowMaxSeconds ?? 60;
  }

  /** Calls waiting for room. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** The policies as this client sees them now, for logs and tests. */
  policies(): { name: string; quota: number | undefined; remaining: number; resetInMs: number | undefined }[] {
    const now = this.#clock.now();
    this.#catchUp(now);
    return [...this.#policies].map(([name, mirror]) => ({
      name,
      quota: mirror.quota,
      remaining: mirror.level,
      resetInMs: mirror.resetAt === undefined ? undefined : Math.max(0, mirror.resetAt - now),
    }));
  }

  /** When the next send would have room in every policy, ignoring the queue; undefined when now (or unknown). */
  blockedUntil(): { policy: string; atMs: number } | undefined {
    const now = this.#clock.now();
    this.#catchUp(now);
    const verdict = this.#verdict(now);
    return verdict.kind === 'wait-until' ? { policy: verdict.policy, atMs: verdict.atMs } : undefined;
  }

  /** Waits, in arrival order, until one more request fits every policy; rejects with `NoRoomError` when that is too far. */
  acquire(request: RoomRequest): Promise<Permit> {
    const { signal } = request;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Permit>((resolve, reject) => {
      const onAbort = () => {
        const index = this.#queue.indexOf(waiter);
        if (index >= 0) this.#queue.splice(index, 1);
        reject(signal!.reason);
        this.#wake?.();
      };
      const waiter: Waiter = {
        request,
        enqueuedAt: this.#clock.now(),
        resolve: (permit) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(permit);
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
      void this.#pump();
    });
  }

  /** One loop serves the queue head by head; an answer or an abort wakes it early. */
  async #pump(): Promise<void> {
    if (this.#pumping) return void this.#wake?.();
    this.#pumping = true;
    try {
      while (this.#queue.length > 0) {
        const head = this.#queue[0]!;
        const now = this.#clock.now();
        this.#catchUp(now);
        const verdict = this.#verdict(now);
        if (verdict.kind === 'send') {
          this.#queue.shift();
          head.resolve(this.#grant(now - head.enqueuedAt));
          continue;
        }
        if (verdict.kind === 'wait-until') {
          const waitMs = verdict.atMs - now;
          const why = waitMs > head.request.maxWaitMs ? 'beyond-wait-cap' : verdict.atMs > head.request.deadlineAt ? 'beyond-deadline' : undefined;
          if (why) {
            this.#queue.shift();
            head.reject(new NoRoomError(verdict.policy, waitMs, why));
            continue;
          }
        }
        await this.#sleep(verdict.kind === 'wait-until' ? verdict.atMs - now : undefined);
      }
    } finally {
      this.#pumping = false;
    }
  }

  #verdict(now: number): Verdict {
    if (!this.#answered) return this.#inFlight === 0 ? { kind: 'send' } : { kind: 'await-answer' };
    let until: { atMs: number; policy: string } | undefined;
    let unknownReset = false;
    for (const [name, mirror] of this.#policies) {
      if (mirror.level >= 1 - LEVEL_EPSILON) continue;
      // Room comes back by refill (a bucket) or at the reset, whichever is first.
      const refilledAt = mirror.refillPerMs > 0 && this.#capOf(mirror) >= 1 ? now + (1 - mirror.level) / mirror.refillPerMs : Number.POSITIVE_INFINITY;
      const atMs = Math.min(refilledAt, mirror.resetAt ?? Number.POSITIVE_INFINITY);
      if (atMs === Number.POSITIVE_INFINITY) unknownReset = true;
      else if (!until || atMs > until.atMs) until = { atMs: Math.ceil(atMs), policy: name };
    }
    if (until) return { kind: 'wait-until', ...until };
    // Empty and no reset known: the answers in flight will tell; with none in flight, one request asks.
    if (unknownReset) return this.#inFlight === 0 ? { kind: 'send' } : { kind: 'await-answer' };
    return { kind: 'send' };
  }

  /** Brings every level to `now`: a bucket's refill, and a reset that has passed (the whole quota, less what is in flight). */
  #catchUp(now: number): void {
    for (const mirror of this.#policies.values()) {
      const cap = this.#capOf(mirror);
      if (mirror.refillPerMs > 0) mirror.level = Math.max(mirror.level, Math.min(cap, mirror.level + (now - mirror.levelAt) * mirror.refillPerMs));
      mirror.levelAt = now;
      if (mirror.resetAt === undefined || mirror.resetAt > now) continue;
      mirror.level = Math.max(mirror.level, cap);
      mirror.resetAt = undefined;
      mirror.epochSeq = this.#sent + 1;
    }
  }

  /** The most this client may have to send: the quota, less the sends the server may not have counted yet. */
  #capOf(mirror: PolicyMirror): number {
    return (mirror.quota ?? mirror.largestSeen) - this.#inFlight;
  }

  #grant(waitedMs: number): Permit {
    this.#sent += 1;
    this.#inFlight += 1;
    const seq = this.#sent;
    const settledAtSend = this.#settled;
    for (const mirror of this.#policies.values()) mirror.level -= 1;
    let settled = false;
    return {
      waitedMs,
      settle: (outcome) => {
        if (settled) return;
        settled = true;
        this.#settle(seq, settledAtSend, outcome.answered, outcome.policies);
      },
    };
  }

  #settle(seq: number, settledAtSend: number, answered: boolean, policies: PolicyReport[] | undefined): void {
    this.#inFlight -= 1;
    this.#settled += 1;
    // Sends settled while this one was out: the server may have counted them after this answer's
    // `r` (its order need not be ours), so they are taken off it as the ones still in flight are.
    const settledMeanwhile = this.#settled - settledAtSend - 1;
    if (answered) this.#answered = true;
    const now = this.#clock.now();
    this.#catchUp(now);
    for (const report of policies ?? []) {
      let mirror = this.#policies.get(report.name);
      if (!mirror) {
        mirror = { quota: undefined, largestSeen: 0, refillPerMs: 0, level: 0, levelAt: now, resetAt: undefined, appliedSeq: 0, epochSeq: 0 };
        this.#policies.set(report.name, mirror);
      }
      mirror.quota = report.quota ?? mirror.quota;
      mirror.largestSeen = Math.max(mirror.largestSeen, report.remaining);
      const { quota, windowSeconds } = report;
      mirror.refillPerMs = quota !== undefined && windowSeconds !== undefined && windowSeconds > 0 && windowSeconds <= this.#bucketWindowMaxSeconds ? quota / (windowSeconds * 1000) : 0;
      // Answers may arrive out of order: only the newest send's answer, from the current window, counts.
      if (seq <= mirror.appliedSeq || seq < mirror.epochSeq) continue;
      mirror.level = report.remaining - this.#inFlight - settledMeanwhile;
      mirror.levelAt = now;
      // A bucket comes back by its refill alone: its `t` (until full) knew nothing of the requests
      // then in flight, and an answer older than this one, ignored, may be one the server charged
      // afterwards; a level set back to the whole quota at `t` then sent too much (2% of 429s
      // with answers out of order under load). A fixed window comes back whole at `t`: the server
      // counted it from a moment before the answer arrived, so counting from now errs late.
      mirror.resetAt = mirror.refillPerMs > 0 ? undefined : now + report.resetSeconds * 1000;
      mirror.appliedSeq = seq;
    }
    this.#wake?.();
  }

  /** Until `ms` have passed (if given) or something changes (an answer, an abort), whichever comes first. */
  async #sleep(ms: number | undefined): Promise<void> {
    const controller = new AbortController();
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (ms !== undefined) this.#clock.sleep(ms, controller.signal).then(resolve, () => {});
    });
    this.#wake = undefined;
    controller.abort();
  }
}
