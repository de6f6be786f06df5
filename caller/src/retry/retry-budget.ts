export interface RetryBudgetOptions {
  /** Bucket size (in retries). Default 10. */
  maxTokens?: number;
  /** Tokens a successful call puts back. Default 0.1: at most one retry per ten successes in steady state. */
  refillPerSuccess?: number;
}

/**
 * A retry budget shared by every call of one client (the gRPC retry-throttling idea):
 * a retry costs one token, a success puts back a fraction of one. While a service
 * fails everything, the bucket drains and calls fail fast instead of multiplying the
 * load: N concurrent calls against a server that always fails make at most
 * N + maxTokens requests, however many attempts each call may make. Retries paced by
 * the server's Retry-After are not charged (see PredictorClient).
 */
export class RetryBudget {
  readonly #maxTokens: number;
  readonly #refillPerSuccess: number;
  #tokens: number;

  constructor(options: RetryBudgetOptions = {}) {
    this.#maxTokens = options.maxTokens ?? 10;
    this.#refillPerSuccess = options.refillPerSuccess ?? 0.1;
    this.#tokens = this.#maxTokens;
  }

  get tokens(): number {
    return this.#tokens;
  }

  /** Takes one retry from the budget; false when it is empty. */
  tryAcquire(): boolean {
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  recordSuccess(): void {
    this.#tokens = Math.min(this.#maxTokens, this.#tokens + this.#refillPerSuccess);
  }
}
