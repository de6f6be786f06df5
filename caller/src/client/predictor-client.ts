import { randomUUID } from 'node:crypto';
import { fullJitterDelay, type BackoffOptions } from '../retry/backoff.js';
import { systemClock, type Clock } from '../retry/clock.js';
import { parseRetryAfter } from '../retry/retry-after.js';
import { RetryBudget } from '../retry/retry-budget.js';
import { parseRateLimitFields } from '../limits/rate-limit-fields.js';
import { NoRoomError, RateLimitView, type Permit } from '../limits/rate-limit-view.js';
import type { AccessToken, TokenSource } from '../tokens/token-source.js';
import { authorizationHeaders } from '../dpop/authorization.js';
import { asksForDpopNonce, parseChallenges } from './challenges.js';
import {
  PredictorApiError,
  PredictorCallError,
  PredictorUnreachableError,
  QuotaExhaustedError,
  RetriesExhaustedError,
  RetryAfterTooLongError,
  RetryBudgetExhaustedError,
  type CallSummary,
  type Problem,
  type StopReason,
} from './errors.js';

export type IrisRow = [number, number, number, number];

export interface PredictResponse {
  id: string;
  model: string;
  created: number;
  predictions: { label: string; probabilities: Record<string, number> }[];
}

/** Statuses worth another attempt with the same Idempotency-Key (contract, section 5). */
const RETRYABLE_STATUSES = new Set([409, 429, 502, 503, 504]);

/** One attempt and what the client does next; emitted for every attempt. */
export interface AttemptEvent {
  idempotencyKey: string | undefined;
  attempt: number;
  /** Undefined when the attempt got no answer (connection refused, reset, timeout). */
  status: number | undefined;
  /** The network error of an attempt without an answer. */
  error: string | undefined;
  next: 'done' | 'retry' | 'refresh-token' | 'stop';
  /** Wait before the next attempt (in milliseconds); 0 unless `next` is `retry`. */
  waitMs: number;
  /**
   * Why the wait is what it is (`backoff`, `retry-after`; `dpop-nonce`: the predictor asked for
   * a DPoP proof with its nonce, sent again at once), or why the call ends.
   */
  reason: 'success' | 'backoff' | 'retry-after' | 'token-refresh' | 'dpop-nonce' | StopReason;
}

export interface PredictorClientOptions {
  /** Base URL of the predictor, e.g. http://localhost:8080. */
  baseUrl: string;
  tokens: Pick<TokenSource, 'getToken' | 'invalidate'>;
  /** Attempts per call, including the first. Default 5. */
  maxAttempts?: number;
  /** Full-jitter backoff; every wait is capped at `maxDelayMs` (default 30 000). */
  backoff?: BackoffOptions;
  /** Timeout of one attempt (in milliseconds). Default 10 000. */
  attemptTimeoutMs?: number;
  /** Shared by every call of this client. Default: the AWS standard retry quota (500 units, a retry 5 or 10, see RetryBudget). */
  retryBudget?: RetryBudget;
  /**
   * The server's rate limits as this client sees them, from the rate-limit fields of every answer;
   * every attempt waits in it for room (first come, first served). Default: one per client.
   */
  rateLimits?: RateLimitView;
  /** Idempotency key of a new logical prediction. Default: a random UUID v4. */
  newIdempotencyKey?: () => string;
  onAttempt?: (event: AttemptEvent) => void;
  clock?: Clock;
  /** Uniform [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
  fetch?: typeof fetch;
}

export interface PredictOptions {
  /** Reuse a key to make a retried logical prediction recognisable. */
  idempotencyKey?: string;
  /** Aborting cancels the attempt or the wait in progress at once. */
  signal?: AbortSignal;
  /** Overall time for all attempts and waits (in milliseconds). */
  deadlineMs?: number;
  maxAttempts?: number;
}

/**
 * Calls the predictor: one Idempotency-Key per logical prediction, the same on every
 * attempt; bounded, jittered retries that honour Retry-After; one token refresh on
 * 401; an immediate stop on answers a retry cannot change. A DPoP-bound token goes as
 * `Authorization: DPoP` with a new proof per attempt; a 401 `use_dpop_nonce` is sent
 * again at once with the predictor's nonce, once, outside the attempts and the budget.
 */
export class PredictorClient {
  readonly #options: PredictorClientOptions & { baseUrl: string };
  readonly #fetch: typeof fetch;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #budget: RetryBudget;
  readonly #rateLimits: RateLimitView;

  constructor(options: PredictorClientOptions) {
    this.#options = { ...options, baseUrl: options.baseUrl.replace(/\/+$/, '') };
    this.#fetch = options.fetch ?? fetch;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#budget = options.retryBudget ?? new RetryBudget();
    this.#rateLimits = options.rateLimits ?? new RateLimitView({ clock: this.#clock });
  }

  async predict(inputs: IrisRow[], options: PredictOptions = {}): Promise<PredictResponse> {
    const idempotencyKey = options.idempotencyKey ?? (this.#options.newIdempotencyKey ?? randomUUID)();
    return (await this.#call('POST', '/v1/predict', { inputs }, idempotencyKey, options)) as PredictResponse;
  }

  async listModels(options: Omit<PredictOptions, 'idempotencyKey'> = {}): Promise<unknown> {
    return this.#call('GET', '/v1/models', undefined, undefined, options);
  }

  async #call(method: string, path: string, body: unknown, idempotencyKey: string | undefined, options: PredictOptions): Promise<unknown> {
    const clock = this.#clock;
    const maxAttempts = options.maxAttempts ?? this.#options.maxAttempts ?? 5;
    const maxDelayMs = this.#options.backoff?.maxDelayMs ?? 30_000;
    const deadlineAt = options.deadlineMs === undefined ? Number.POSITIVE_INFINITY : clock.now() + options.deadlineMs;
    const summary: CallSummary = { attempts: 0, totalWaitMs: 0, lastStatus: undefined };
    let refreshedToken = false;
    const url = `${this.#options.baseUrl}${path}`;
    /** Attempts that only answered the predictor's request for a DPoP nonce: not counted against `maxAttempts`. */
    let nonceRetries = 0;
    let lastWasNonceRetry = false;
    /** What this call's last retry took from the budget; a success gives it back. */
    let lastRetryCost: number | undefined;
    const emit = (event: Omit<AttemptEvent, 'idempotencyKey' | 'attempt'>) => this.#options.onAttempt?.({ idempotencyKey, attempt: summary.attempts, ...event });

    for (;;) {
      if (options.signal?.aborted) throw new PredictorCallError('call aborted', 'aborted', summary, { cause: options.signal.reason });
      const permit = await this.#roomForAttempt(options.signal, maxDelayMs, deadlineAt, summary);
      let outcome: { response?: Response; error?: string };
      let token: AccessToken;
      try {
        summary.attempts += 1;
        token = await this.#options.tokens.getToken();
        outcome = await this.#attempt(method, url, body, idempotencyKey, token, options.signal, deadlineAt);
        permit.settle({ answered: outcome.response !== undefined, policies: outcome.response && parseRateLimitFields(outcome.response.headers, clock.wallNow()) });
      } finally {
        permit.settle({ answered: false, policies: undefined }); // no-op once settled; frees the slot when the token failed
      }
      summary.lastStatus = outcome.response?.status;
      // RFC 9449 section 8.2: any answer may carry the nonce to use next; proofs for this origin take the latest.
      if (token.tokenType === 'DPoP' && outcome.response) token.dpopKey?.rememberNonce(url, outcome.response.headers);
      const afterNonceRetry = lastWasNonceRetry;
      lastWasNonceRetry = false;

      if (outcome.response?.ok) {
        this.#budget.recordSuccess(lastRetryCost);
        emit({ status: outcome.response.status, error: undefined, next: 'done', waitMs: 0, reason: 'success' });
        return outcome.response.json();
      }
      if (options.signal?.aborted) throw new PredictorCallError('call aborted', 'aborted', summary, { cause: options.signal.reason });
      const response = outcome.response;
      const status = response?.status;
      const stop = (reason: StopReason, error: PredictorCallError): never => {
        emit({ status, error: outcome.error, next: 'stop', waitMs: 0, reason });
        throw error;
      };

      // The predictor wants its nonce in the proof (RFC 9449 section 9): the same request again at once,
      // with a new proof carrying it. Not a failure: no wait, no budget, no attempt counted. Twice in a row is final.
      const nonceChallenge = status === 401 && token.tokenType === 'DPoP' && asksForDpopNonce(response!);
      if (nonceChallenge && !afterNonceRetry && response!.headers.has('dpop-nonce')) {
        nonceRetries += 1;
        lastWasNonceRetry = true;
        await response!.body?.cancel();
        emit({ status, error: undefined, next: 'retry', waitMs: 0, reason: 'dpop-nonce' });
        continue;
      }
      // An expired or revoked token: one refresh, one replay with the same key; a second 401 is final.
      if (status === 401 && !refreshedToken && !nonceChallenge) {
        refreshedToken = true;
        this.#options.tokens.invalidate(token);
        await response!.body?.cancel();
        emit({ status, error: undefined, next: 'refresh-token', waitMs: 0, reason: 'token-refresh' });
        continue;
      }
      if (response && !RETRYABLE_STATUSES.has(response.status)) {
        const problem = await readProblem(response);
        stop('not-retryable', new PredictorApiError(response.status, problem, bearerError(response.headers.get('www-authenticate')), summary));
      }

      const failure = (reason: StopReason, message: string) =>
        response ? new RetriesExhaustedError(message, reason, summary) : new PredictorUnreachableError(`predictor unreachable at ${this.#options.baseUrl}: ${outcome.error}`, reason, summary);
      await response?.body?.cancel();
      // A 429 whose limit stays spent beyond the wait cap (a daily quota): no attempt can succeed before it resets.
      const blocked = status === 429 ? this.#rateLimits.blockedUntil() : undefined;
      if (blocked && blocked.atMs - clock.now() > maxDelayMs) stop('quota-exhausted', new QuotaExhaustedError(new Date(clock.wallNow() + (blocked.atMs - clock.now())), summary));
      if (summary.attempts - nonceRetries >= maxAttempts) stop('attempts-exhausted', failure('attempts-exhausted', 'retries exhausted'));
      const retryAfterMs = parseRetryAfter(response?.headers.get('retry-after'), clock.wallNow());
      if (retryAfterMs !== undefined && (retryAfterMs > maxDelayMs || clock.now() + retryAfterMs > deadlineAt)) {
        stop('retry-after-too-long', new RetryAfterTooLongError(new Date(clock.wallNow() + retryAfterMs), summary));
      }
      // A 429 or 409 with Retry-After is the protocol pacing a healthy exchange (a rate limit, a key
      // still executing): not charged. Every other retry is, 5 units after an answer, 10 after none.
      const serverPaced = retryAfterMs !== undefined && (status === 429 || status === 409);
      if (!serverPaced) {
        const cost = this.#budget.tryAcquire(response ? 'answered' : 'no-answer');
        if (cost === undefined) stop('budget-exhausted', new RetryBudgetExhaustedError(status === undefined ? `no answer, ${outcome.error}` : `status ${status}`, summary));
        lastRetryCost = cost;
      }
      const backoffMs = fullJitterDelay(summary.attempts, { ...this.#options.backoff, maxDelayMs }, this.#random);
      const waitMs = Math.max(backoffMs, retryAfterMs ?? 0);
      if (clock.now() + waitMs >= deadlineAt) stop('deadline', failure('deadline', 'deadline reached'));
      emit({ status, error: outcome.error, next: 'retry', waitMs, reason: retryAfterMs !== undefined && retryAfterMs >= backoffMs ? 'retry-after' : 'backoff' });
      try {
        await clock.sleep(waitMs, options.signal);
      } catch (error) {
        throw new PredictorCallError('call aborted', 'aborted', summary, { cause: error });
      }
      summary.totalWaitMs += waitMs;
    }
  }

  /** Waits for room in the server's rate limits; a quota spent beyond the wait cap or the deadline ends the call here. */
  async #roomForAttempt(signal: AbortSignal | undefined, maxDelayMs: number, deadlineAt: number, summary: CallSummary): Promise<Permit> {
    try {
      const permit = await this.#rateLimits.acquire({ signal, maxWaitMs: maxDelayMs, deadlineAt });
      summary.totalWaitMs += permit.waitedMs;
      return permit;
    } catch (error) {
      if (!(error instanceof NoRoomError)) throw new PredictorCallError('call aborted', 'aborted', summary, { cause: error });
      if (error.why === 'beyond-wait-cap') throw new QuotaExhaustedError(new Date(this.#clock.wallNow() + error.waitMs), summary);
      throw new RetriesExhaustedError(`deadline reached while waiting for room in rate-limit policy ${error.policy}`, 'deadline', summary);
    }
  }

  async #attempt(
    method: string,
    url: string,
    body: unknown,
    idempotencyKey: string | undefined,
    token: AccessToken,
    signal: AbortSignal | undefined,
    deadlineAt: number,
  ): Promise<{ response?: Response; error?: string }> {
    // A new DPoP proof per attempt (fresh jti, iat now, the origin's latest nonce); a bound token never goes as Bearer.
    const headers: Record<string, string> = { ...(await authorizationHeaders(token, { method, url })), accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
    const timeoutMs = Math.max(1, Math.min(this.#options.attemptTimeoutMs ?? 10_000, deadlineAt - this.#clock.now()));
    const attemptSignal = AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])]);
    try {
      const response = await this.#fetch(url, { method, headers, body: body === undefined ? null : JSON.stringify(body), signal: attemptSignal });
      return { response };
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause;
      return { error: cause?.message ?? (error as Error).message };
    }
  }
}

async function readProblem(response: Response): Promise<Problem | undefined> {
  try {
    return (await response.json()) as Problem;
  } catch {
    return undefined;
  }
}

/** The `error` of the first challenge that has one (RFC 6750 Bearer, RFC 9449 DPoP). */
export function bearerError(header: string | null): string | undefined {
  return parseChallenges(header).find((challenge) => challenge.params['error'] !== undefined)?.params['error'];
}
