import { createHmac, timingSafeEqual } from 'node:crypto';

export interface DpopNoncesOptions {
  /** The secret the nonces are derived from: the same on every replica, so any replica accepts any replica's nonce. */
  secret: string;
  /** How often the nonce changes (seconds); one is accepted for one to two periods. Default 60. */
  stepSeconds?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
}

/**
 * Server-provided DPoP nonces (RFC 9449 section 9), stateless: the nonce of a period is an
 * HMAC of the period's number, so replicas sharing the secret need no shared store, and a
 * nonce cannot be made in advance by someone who holds the client's key but not the secret.
 * Accepted: the current period's, the previous one's (a nonce handed out just before the
 * change), and the next one's (a replica whose clock is slightly ahead).
 */
export class DpopNonces {
  readonly #secret: string;
  readonly #stepMs: number;
  readonly #now: () => number;

  constructor(options: DpopNoncesOptions) {
    this.#secret = options.secret;
    this.#stepMs = (options.stepSeconds ?? 60) * 1000;
    this.#now = options.now ?? Date.now;
  }

  /** The nonce to hand out now (`DPoP-Nonce`). */
  current(): string {
    return this.#nonceOf(this.#step());
  }

  accepts(nonce: string): boolean {
    const presented = Buffer.from(nonce);
    const step = this.#step();
    let accepted = false;
    // Every candidate is compared, in constant time, whichever matches.
    for (const candidate of [step - 1, step, step + 1]) {
      const expected = Buffer.from(this.#nonceOf(candidate));
      if (expected.length === presented.length && timingSafeEqual(expected, presented)) accepted = true;
    }
    return accepted;
  }

  #step(): number {
    return Math.floor(this.#now() / this.#stepMs);
  }

  #nonceOf(step: number): string {
    return createHmac('sha256', this.#secret).update(`dpop-nonce:${step}`).digest('base64url');
  }
}
