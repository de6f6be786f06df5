/**
 * What a scenario run did and what its callers saw, on one clock: milliseconds since
 * the run started. The servers' own logs are the rest of the evidence (collect.ts
 * places their wall-clock times on the same axis with `epochAtStart`).
 */

/** What the operator (the scenario) changed; each kind has its own mark in the report. */
export type EventKind =
  | 'key-rotated'
  | 'key-revoked'
  | 'secret-rotated'
  | 'secret-retired'
  | 'scope-changed'
  | 'client-registered'
  | 'client-disabled'
  | 'auth-server-down'
  | 'auth-server-up'
  | 'proxy-faults'
  | 'store-cut'
  | 'store-restored'
  | 'process-killed'
  | 'process-started'
  | 'traffic'
  | 'change';

export interface TimelineEvent {
  kind: EventKind;
  label: string;
  atMs: number;
  /** For a change that lasts (a proxy dropping answers): when it ended. */
  untilMs?: number;
}

/** A token request of a caller as the caller saw it; `kid` is the signing key of the token it got. */
export interface TokenObservation {
  clientId: string;
  atMs: number;
  outcome: 'issued' | 'failed';
  kid?: string;
  /** The OAuth error of a refused request. */
  error?: string;
  /** The first token of this caller, or a later one (renewal ahead of expiry, refresh after a 401). */
  first: boolean;
}

/** An attempt of a caller that got no HTTP answer (refused, reset, dropped, timed out). */
export interface ConnectionFailure {
  clientId: string;
  atMs: number;
  error: string;
  idempotencyKey?: string;
}

/** A 429 as the caller received it, with the Retry-After it carried (undefined: none). */
export interface RateLimitAnswer {
  clientId: string;
  atMs: number;
  retryAfter: string | undefined;
}

/** A fault a proxy injected (a dropped answer, a reset connection). */
export interface ProxyFault {
  atMs: number;
  kind: string;
}

export class Timeline {
  readonly events: TimelineEvent[] = [];
  readonly tokens: TokenObservation[] = [];
  readonly connectionFailures: ConnectionFailure[] = [];
  readonly rateLimitAnswers: RateLimitAnswer[] = [];
  readonly proxyFaults: ProxyFault[] = [];
  /** Which caller sent each idempotency key: a server log line without a client id (a 401) is placed by it. */
  readonly clientOfKey = new Map<string, string>();
  /** Wall-clock time (ms since the epoch) of the run's start, for the servers' log times. */
  readonly epochAtStart = Date.now();
  readonly #started = performance.now();

  /** Milliseconds since the run started. */
  now(): number {
    return performance.now() - this.#started;
  }

  /** Where a server's wall-clock log time falls on the run's axis. */
  fromEpoch(epochMs: number): number {
    return epochMs - this.epochAtStart;
  }

  event(kind: EventKind, label: string, atMs = this.now()): TimelineEvent {
    const event = { kind, label, atMs };
    this.events.push(event);
    return event;
  }

  /** Ends a lasting change begun with `event`. */
  end(event: TimelineEvent, atMs = this.now()): void {
    event.untilMs = atMs;
  }

  proxyFault(kind: string): void {
    this.proxyFaults.push({ atMs: this.now(), kind });
  }

  /**
   * A fetch for a caller's PredictorClient that notes what the caller saw: attempts that got
   * no answer, and the Retry-After of each 429. The caller gets every response untouched.
   */
  apiFetch(clientId: string): typeof fetch {
    return async (input, init) => {
      const key = new Headers(init?.headers).get('idempotency-key') ?? undefined;
      if (key) this.clientOfKey.set(key, clientId);
      let response: Response;
      try {
        response = await fetch(input, init);
      } catch (error) {
        // An attempt the caller itself cancelled is no failure of the network; its own timeout is.
        const reason = init?.signal?.reason as Error | undefined;
        if (!init?.signal?.aborted || reason?.name === 'TimeoutError') {
          const cause = (error as Error & { cause?: Error }).cause;
          this.connectionFailures.push({ clientId, atMs: this.now(), error: cause?.message ?? (error as Error).message, ...(key ? { idempotencyKey: key } : {}) });
        }
        throw error;
      }
      if (response.status === 429) this.rateLimitAnswers.push({ clientId, atMs: this.now(), retryAfter: response.headers.get('retry-after') ?? undefined });
      return response;
    };
  }

  /** A fetch for a caller's TokenSource that reads the kid of every token the endpoint returns (from a copy). */
  tokenFetch(onKid: (kid: string) => void): typeof fetch {
    return async (input, init) => {
      const response = await fetch(input, init);
      const url = input instanceof Request ? input.url : String(input);
      if (response.ok && new URL(url).pathname.endsWith('/token')) {
        const body = (await response.clone().json().catch(() => ({}))) as { access_token?: unknown };
        if (typeof body.access_token === 'string') onKid(kidOf(body.access_token));
      }
      return response;
    };
  }
}

/** The `kid` of a compact JWS, without verifying it (the report only names keys). */
export function kidOf(jwt: string): string {
  try {
    const header = JSON.parse(Buffer.from(jwt.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown };
    return typeof header.kid === 'string' ? header.kid : '(no kid)';
  } catch {
    return '(not a JWT)';
  }
}
