export interface BackoffOptions {
  /** Upper bound of the first retry's wait (in milliseconds). Default 200. */
  baseDelayMs?: number;
  /** Cap of any single wait (in milliseconds). Default 30 000. */
  maxDelayMs?: number;
}

/**
 * "Full jitter" exponential backoff: a uniform wait in [0, min(cap, base·2^(retry-1))).
 * Spreading retries over the whole window is what keeps a crowd of clients from
 * retrying in lockstep (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 */
export function fullJitterDelay(retry: number, options: BackoffOptions, random: () => number): number {
  const base = options.baseDelayMs ?? 200;
  const cap = options.maxDelayMs ?? 30_000;
  return Math.floor(random() * Math.min(cap, base * 2 ** (retry - 1)));
}
