export interface RetryBudgetOptions {
  /** Units the budget holds, and starts with. Default 500. */
  capacity?: number;
  /** Units a retry after an answered failure (5xx, or 409/429 without Retry-After) costs. Default 5. */
  retryCost?: number;
  /** Units a retry after no answer (timeout, reset, refused connection) costs. Default 10. */
  noAnswerRetryCost?: number;
  /** Units a call that succeeds at its first attempt puts back. Default 1. */
  noRetryIncrement?: number;
  /** @deprecated The former option, room for this many retries: taken as `capacity` = maxTokens × noAnswerRetryCost. */
  maxTokens?: number;
}

/** Why a call wants to retry: the server answered with a failure, or nothing came back. */
export type RetryCause = 'answered' | 'no-answer';

/**
 * A retry budget shared by every call of one client: the AWS SDKs' standard retry quota
 * (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html), with their numbers.
 * A retry takes 5 units, or 10 when the attempt got no answer (the stronger sign of trouble); a
 * call that then succeeds gives back what its last retry took, one that succeeded at once gives 1.
 *
 * - Against a server that fails everything, the budget drains and further retries are refused:
 *   N concurrent calls make at most N + capacity / 5 requests (N + 50 when nothing answers),
 *   however many attempts each may make.
 * - Under transient loss p per attempt it holds steady: each call gives back 1 with probability
 *   1 − p and, with k retries, keeps k − 1 of their costs; at cost 10 the drift per call is
 *   (1 − p) − 10·p²/(1 − p), positive up to p ≈ 24% and slow beyond (−0.08 per call at 25%),
 *   so a batch carries through 20% loss where the former 10 retries (+0.1 per success) ran dry
 *   at about 9%.
 * Retries the server paces (429 and 409 with Retry-After) are not charged: see PredictorClient.
 */
export class RetryBudget {
  readonly #capacity: number;
  readonly #retryCost: number;
  readonly #noAnswerRetryCost: number;
  readonly #noRetryIncrement: number;
  #available: number;

  constructor(options: RetryBudgetOptions = {}) {
    this.#retryCost = options.retryCost ?? 5;
    this.#noAnswerRetryCost = options.noAnswerRetryCost ?? 10;
    this.#capacity = options.capacity ?? (options.maxTokens === undefined ? 500 : options.maxTokens * this.#noAnswerRetryCost);
    this.#noRetryIncrement = options.noRetryIncrement ?? 1;
    for (const [name, value] of Object.entries({ capacity: this.#capacity, retryCost: this.#retryCost, noAnswerRetryCost: this.#noAnswerRetryCost, noRetryIncrement: this.#noRetryIncrement })) {
      if (!Number.isFinite(value) || value < 0) throw new RangeError(`RetryBudget ${name} must be a finite number >= 0, got ${value}`);
    }
    this.#available = this.#capacity;
  }

  /** Units left. */
  get available(): number {
    return this.#available;
  }

  /** Takes the cost of one retry; returns it, or undefined (and takes nothing) when too little is left. */
  tryAcquire(cause: RetryCause): number | undefined {
    const cost = cause === 'no-answer' ? this.#noAnswerRetryCost : this.#retryCost;
    if (this.#available < cost) return undefined;
    this.#available -= cost;
    return cost;
  }

  /** A call succeeded: gives back what its last retry took (`lastRetryCost`), or `noRetryIncrement` when it took none. */
  recordSuccess(lastRetryCost: number | undefined): void {
    this.#available = Math.min(this.#capacity, this.#available + (lastRetryCost ?? this.#noRetryIncrement));
  }
}
