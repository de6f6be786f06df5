import { createDpopKey, dpopProof, type DpopKey } from '../../predictor/src/testing/dpop-proofs.js';
import { rememberSecret } from '../../test/src/harness/processes.js';

// B with DPoP (RFC 9449): every request carries a proof of its own (a new jti, the predictor
// refuses a replay), so nothing on the server can be cached from one request to the next.
// Signing a proof costs the bench process about as much as the predictor's whole request, so
// the proofs are made before each load, outside the measured window, and handed out one per
// request; a load that outruns its pool sends the rest without a proof, the predictor
// refuses them (401), and the run says so instead of hiding it.

/**
 * Proofs beyond what the previous load's throughput would use: a round may go much faster
 * than the one before (seen: 1.6 times, with another test run loading the machine).
 */
export const PROOF_HEADROOM = 3;

/** At least this many proofs per second of load, whatever the previous one did (a proof takes about 0.1 ms to make). */
export const MIN_PROOFS_PER_SECOND = 1_000;

/**
 * How many proofs a load of `durationSeconds` at `connections` needs when it goes about as
 * fast as `expectedRps`: that with PROOF_HEADROOM (and MIN_PROOFS_PER_SECOND at least), and two per connection beyond it (the
 * requests autocannon builds but never sends when the time is up, and the one it builds up front).
 */
export function proofsNeeded(expectedRps: number, durationSeconds: number, connections: number): number {
  if (!Number.isFinite(expectedRps) || expectedRps <= 0) throw new RangeError(`no throughput to size the DPoP proofs by (${expectedRps})`);
  return Math.ceil(Math.max(expectedRps * PROOF_HEADROOM, MIN_PROOFS_PER_SECOND) * durationSeconds) + 2 * connections;
}

/** Proofs made for one load: each handed out once; `dry` counts the requests that found none left. */
export class ProofPool {
  readonly #proofs: string[];
  #next = 0;
  #dry = 0;

  constructor(proofs: string[]) {
    this.#proofs = proofs;
  }

  /** The next unused proof, in the order made (the oldest first); undefined once all are used. */
  take(): string | undefined {
    if (this.#next < this.#proofs.length) return this.#proofs[this.#next++];
    this.#dry += 1;
    return undefined;
  }

  get size(): number {
    return this.#proofs.length;
  }

  get handedOut(): number {
    return this.#next;
  }

  /** Requests built after the pool ran out: sent without a proof, so refused. */
  get dry(): number {
    return this.#dry;
  }
}

/** What one load used of its pool. */
export interface ProofUse {
  /** Proofs made for the load, and the seconds that took (before the load started). */
  made: number;
  generationSeconds: number;
  /** Proofs handed to requests (autocannon builds a few it never sends). */
  handedOut: number;
  /** Requests built after the pool was used up: sent without a proof. */
  dry: number;
}

/** Proofs signed at once: WebCrypto signs off the main thread, so a batch keeps both cores busy. */
const BATCH = 64;

/**
 * A DPoP caller of the predictor: a key, a token bound to it from the auth-server, and the
 * proofs for `POST htu` with that token.
 */
export class DpopCaller {
  private constructor(
    readonly key: DpopKey,
    readonly token: string,
    readonly htu: string,
  ) {}

  /**
   * Asks the auth-server for a token with a proof of a new key in the token request's `DPoP`
   * header: it answers token_type DPoP, bound to the key (cnf.jkt). The token's other
   * parameters are the bearer token's (client credentials, no scope asked).
   */
  static async create(options: { issuer: string; clientId: string; secret: string; htu: string }): Promise<DpopCaller> {
    const key = await createDpopKey();
    const response = await fetch(`${options.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.secret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        dpop: await dpopProof(key, { htm: 'POST', htu: `${options.issuer}/token` }),
      },
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (typeof body['access_token'] === 'string') rememberSecret(body['access_token']);
    if (response.status !== 200 || body['token_type'] !== 'DPoP' || typeof body['access_token'] !== 'string') {
      throw new Error(`bench: no DPoP-bound token from ${options.issuer}/token (${response.status}, token_type ${String(body['token_type'])}, ${String(body['error'] ?? '')})`);
    }
    return new DpopCaller(key, body['access_token'], options.htu);
  }

  /** `Authorization` for every request; the proof goes in `DPoP`, one per request. */
  get authorization(): Record<string, string> {
    return { authorization: `DPoP ${this.token}` };
  }

  /** `count` fresh proofs (iat now, a new jti each), and the seconds that took. */
  async pool(count: number): Promise<{ pool: ProofPool; seconds: number }> {
    const started = performance.now();
    const proofs: string[] = [];
    for (let made = 0; made < count; made += BATCH) {
      proofs.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, count - made) }, () => dpopProof(this.key, { htm: 'POST', htu: this.htu, accessToken: this.token })))));
    }
    return { pool: new ProofPool(proofs), seconds: (performance.now() - started) / 1000 };
  }
}
