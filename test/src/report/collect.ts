import type { LogRecord } from '../harness/processes.js';
import type { Evidence } from '../scenarios/framework.js';
import type { ConnectionFailure, ProxyFault, Timeline, TimelineEvent, TokenObservation } from './timeline.js';

/** How a request ended, as the report colours it. */
export type Outcome = '200' | 'replay' | '401' | '403' | '409' | '429' | '503' | 'other' | 'connection failure';

export const OUTCOMES: readonly Outcome[] = ['200', 'replay', '401', '403', '409', '429', '503', 'other', 'connection failure'];

/** One request on the timeline: an answer from a predictor's log, or an attempt a caller saw fail without one. */
export interface RequestMark {
  clientId: string;
  atMs: number;
  outcome: Outcome;
  status?: number;
  /** Which predictor answered (its port), or `caller` for a connection failure. */
  source: string;
  kid?: string;
  /** The policy that refused a 429 (`burst`, `daily`), or the network error. */
  detail?: string;
}

/** The burst a client had left after a charged request (predictor log), and whether it was refused. */
export interface RateLimitPoint {
  clientId: string;
  atMs: number;
  remainingBurst: number;
  remainingDaily: number;
  allowed: boolean;
  violated?: string;
}

/** A JWKS fetch by a predictor (its `jwks.loaded` or `jwks.fetch_failed` line). */
export interface JwksFetch {
  atMs: number;
  source: string;
  ok: boolean;
  kids: string[];
}

/** Everything one page shows; plain data, so a page can be rendered (and tested) without running anything. */
export interface ScenarioReport {
  name: string;
  summary: string;
  passed: boolean;
  durationMs: number;
  /** ISO time of the run's start. */
  startedAt: string;
  /** End of the time axis (ms). */
  endMs: number;
  evidence: Evidence[];
  error?: string;
  events: TimelineEvent[];
  requests: RequestMark[];
  tokens: TokenObservation[];
  jwks: JwksFetch[];
  rateLimits: RateLimitPoint[];
  proxyFaults: ProxyFault[];
  /** The Mermaid sequence diagram of the run. */
  mermaid: string;
}

export interface ReportSources {
  timeline: Timeline;
  /** Each predictor's log, named (e.g. by port). */
  predictors: { name: string; records: LogRecord[] }[];
}

/** Places the predictors' log lines on the run's axis beside what the callers saw. */
export function collectReport(sources: ReportSources, result: Pick<ScenarioReport, 'name' | 'summary' | 'passed' | 'durationMs' | 'evidence' | 'mermaid'> & { error?: string }): ScenarioReport {
  const { timeline } = sources;
  const atOf = (record: LogRecord) => timeline.fromEpoch(Date.parse(record['time'] as string));
  const requests: RequestMark[] = [];
  const rateLimits: RateLimitPoint[] = [];
  const jwks: JwksFetch[] = [];
  for (const { name, records } of sources.predictors) {
    for (const record of records) {
      if (record.msg === 'request' && typeof record['route'] === 'string' && record['route'].startsWith('/v1/')) {
        const key = record['idempotencyKey'] as string | undefined;
        const clientId = (record['clientId'] as string | undefined) ?? (key && timeline.clientOfKey.get(key)) ?? 'unauthenticated';
        const status = record['status'] as number;
        const limit = record['rateLimit'] as { allowed: boolean; violated?: string; remaining: number[] } | undefined;
        requests.push({
          clientId,
          atMs: atOf(record),
          outcome: outcomeOf(status, record['idempotency']),
          status,
          source: name,
          ...(typeof record['kid'] === 'string' ? { kid: record['kid'] } : {}),
          ...(limit?.violated ? { detail: limit.violated } : {}),
        });
        if (limit && limit.remaining.length > 0) {
          rateLimits.push({ clientId, atMs: atOf(record), remainingBurst: limit.remaining[0]!, remainingDaily: limit.remaining[1] ?? 0, allowed: limit.allowed, ...(limit.violated ? { violated: limit.violated } : {}) });
        }
      } else if (record['event'] === 'jwks.loaded' || record['event'] === 'jwks.fetch_failed') {
        const ok = record['event'] === 'jwks.loaded';
        jwks.push({ atMs: atOf(record), source: name, ok, kids: ((ok ? record['kids'] : record['keptKids']) as string[] | undefined) ?? [] });
      }
    }
  }
  requests.push(...timeline.connectionFailures.map(connectionFailureMark));
  requests.sort((a, b) => a.atMs - b.atMs);
  rateLimits.sort((a, b) => a.atMs - b.atMs);
  // The axis ends with the last thing seen (the run's duration also counts starting and stopping the servers).
  const lastSeen = Math.max(1_000, ...requests.map((request) => request.atMs), ...timeline.tokens.map((token) => token.atMs), ...jwks.map((fetch) => fetch.atMs), ...timeline.events.map((event) => event.untilMs ?? event.atMs));
  const endMs = Math.ceil((lastSeen * 1.02) / 100) * 100;
  return {
    ...result,
    startedAt: new Date(timeline.epochAtStart).toISOString(),
    endMs,
    events: [...timeline.events].sort((a, b) => a.atMs - b.atMs),
    requests,
    tokens: [...timeline.tokens],
    jwks: jwks.sort((a, b) => a.atMs - b.atMs),
    rateLimits,
    proxyFaults: [...timeline.proxyFaults],
  };
}

export function outcomeOf(status: number, idempotency: unknown): Outcome {
  if (status >= 200 && status < 300) return idempotency === 'replayed' ? 'replay' : '200';
  const named = String(status) as Outcome;
  return OUTCOMES.includes(named) ? named : 'other';
}

function connectionFailureMark(failure: ConnectionFailure): RequestMark {
  return { clientId: failure.clientId, atMs: failure.atMs, outcome: 'connection failure', source: 'caller', detail: failure.error };
}
