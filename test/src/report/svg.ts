import type { EventKind } from './timeline.js';
import { OUTCOMES, type Outcome, type RateLimitPoint, type ScenarioReport } from './collect.js';

/** Colours of the outcomes; also the legend's. */
export const OUTCOME_COLOURS: Record<Outcome, string> = {
  '200': '#2e7d32',
  replay: '#00838f',
  '401': '#ef6c00',
  '403': '#ad1457',
  '409': '#6a1b9a',
  '429': '#f9a825',
  '503': '#c62828',
  other: '#5d4037',
  'connection failure': '#212121',
};

const EVENT_COLOURS: Partial<Record<EventKind, string>> = {
  'key-rotated': '#1565c0',
  'key-revoked': '#c62828',
  'secret-rotated': '#4527a0',
  'secret-retired': '#4527a0',
  'scope-changed': '#ad1457',
  'client-registered': '#2e7d32',
  'client-disabled': '#c62828',
  'auth-server-down': '#c62828',
  'auth-server-up': '#2e7d32',
  'proxy-faults': '#6d4c41',
  'store-cut': '#c62828',
  'store-restored': '#2e7d32',
  'process-killed': '#c62828',
  'process-started': '#2e7d32',
  traffic: '#546e7a',
};
const KID_COLOURS = ['#1565c0', '#e65100', '#2e7d32', '#6a1b9a', '#00838f', '#ad1457'];

const WIDTH = 1200;
const LEFT = 200;
const RIGHT = 24;
const PLOT = WIDTH - LEFT - RIGHT;
const ROW = 9;
const LABEL_ROW = 14;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!);
}

const fixed = (value: number) => Math.round(value * 10) / 10;
const secondsLabel = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
/** The part of a kid a reader tells keys apart by (dev kids are `<date>-<random>`). */
export const shortKid = (kid: string) => kid.split('-').at(-1) ?? kid;

/** The run's clients: callers first in the order they appear, the unauthenticated last. */
export function clientsOf(report: ScenarioReport): string[] {
  const seen = new Set<string>();
  for (const item of [...report.tokens, ...report.requests].sort((a, b) => a.atMs - b.atMs)) seen.add(item.clientId);
  return [...seen].sort((a, b) => Number(a === 'unauthenticated') - Number(b === 'unauthenticated'));
}

/**
 * The timeline: per client, every request by outcome (one row per outcome that occurs) and
 * the caller's tokens with their kid; the predictors' JWKS fetches; the proxy's faults; and
 * the operator's changes as marks across all of them. Every mark carries its data
 * (`data-outcome`, `data-kind`, `data-at-ms`) and a native tooltip, so no script is needed.
 */
export function renderTimeline(report: ScenarioReport): string {
  const x = (ms: number) => fixed(LEFT + (Math.max(0, Math.min(ms, report.endMs)) / report.endMs) * PLOT);
  const parts: string[] = [];
  let y = 20;

  // Event labels, staggered into as many rows as they need not to overlap.
  const rowsEnd: number[] = [];
  const labels = report.events.map((event) => {
    const text = event.label.length > 70 ? `${event.label.slice(0, 69)}…` : event.label;
    const start = x(event.atMs);
    let row = rowsEnd.findIndex((end) => end < start);
    if (row === -1) row = rowsEnd.push(0) - 1;
    rowsEnd[row] = start + text.length * 6 + 12;
    return { event, text, row };
  });
  const labelTop = y;
  y += rowsEnd.length * LABEL_ROW + 8;

  // The axis.
  const axisY = y;
  const step = niceStep(report.endMs);
  for (let ms = 0; ms <= report.endMs; ms += step) {
    parts.push(`<line x1="${x(ms)}" y1="${axisY}" x2="${x(ms)}" y2="${axisY + 5}" stroke="#777"/><text x="${x(ms)}" y="${axisY - 3}" class="tick" text-anchor="middle">${ms / 1000} s</text>`);
  }
  y += 12;
  const lanesTop = y;

  const lane = (title: string, height: number, body: (top: number) => string, subtitle?: string) => {
    parts.push(`<rect x="0" y="${y}" width="${WIDTH}" height="${height}" class="lane"/>`);
    parts.push(`<text x="8" y="${y + 12}" class="lane-title">${escapeXml(title)}</text>`);
    if (subtitle) parts.push(`<text x="8" y="${y + 24}" class="lane-subtitle">${escapeXml(subtitle)}</text>`);
    parts.push(body(y));
    y += height + 4;
  };

  const kids = [...new Set([...report.tokens.flatMap((token) => (token.kid ? [token.kid] : [])), ...report.requests.flatMap((request) => (request.kid ? [request.kid] : []))])];
  const kidColour = (kid: string) => KID_COLOURS[kids.indexOf(kid) % KID_COLOURS.length]!;

  for (const clientId of clientsOf(report)) {
    const requests = report.requests.filter((request) => request.clientId === clientId);
    const outcomes = OUTCOMES.filter((outcome) => requests.some((request) => request.outcome === outcome));
    const height = Math.max(30, outcomes.length * ROW + 8);
    lane(clientId, height, (top) => {
      const rows = outcomes.map((outcome, index) => {
        const rowY = top + 4 + index * ROW;
        const marks = requests
          .filter((request) => request.outcome === outcome)
          .map(
            (request) =>
              `<rect class="request" data-client="${escapeXml(clientId)}" data-outcome="${outcome}" data-at-ms="${Math.round(request.atMs)}" x="${x(request.atMs) - 1}" y="${rowY}" width="2" height="${ROW - 2}" fill="${OUTCOME_COLOURS[outcome]}"><title>${escapeXml(
                `${secondsLabel(request.atMs)} ${request.status ?? ''} ${outcome}${request.detail ? ` (${request.detail})` : ''}${request.kid ? ` kid ${request.kid}` : ''} — ${request.source}`,
              )}</title></rect>`,
          );
        return `<text x="${LEFT - 6}" y="${rowY + ROW - 2}" class="row-label" text-anchor="end">${escapeXml(outcome)} ${requests.filter((request) => request.outcome === outcome).length}</text>${marks.join('')}`;
      });
      return rows.join('');
    }, `${requests.length} requests`);

    const tokens = report.tokens.filter((token) => token.clientId === clientId);
    if (tokens.length > 0) {
      lane(`${clientId} · tokens`, 30, (top) =>
        tokens
          .map((token) => {
            const cx = x(token.atMs);
            const cy = top + 20;
            const what = token.outcome === 'issued' ? `${token.first ? 'first token' : 'token renewed'} kid ${token.kid ?? '?'}` : `token refused: ${token.error}`;
            const shape =
              token.outcome === 'issued'
                ? `<path d="M${cx} ${cy - 6} L${cx + 5} ${cy} L${cx} ${cy + 6} L${cx - 5} ${cy} Z" fill="${kidColour(token.kid ?? '')}"/><text x="${cx}" y="${top + 10}" class="kid" text-anchor="middle">${escapeXml(shortKid(token.kid ?? '?'))}</text>`
                : `<path d="M${cx - 4} ${cy - 4} L${cx + 4} ${cy + 4} M${cx + 4} ${cy - 4} L${cx - 4} ${cy + 4}" stroke="#c62828" stroke-width="2"/>`;
            return `<g class="token" data-client="${escapeXml(clientId)}" data-outcome="${token.outcome}" data-kid="${escapeXml(token.kid ?? '')}" data-first="${token.first}" data-at-ms="${Math.round(token.atMs)}"><title>${escapeXml(`${secondsLabel(token.atMs)} ${what}`)}</title>${shape}</g>`;
          })
          .join(''),
      );
    }
  }

  const sources = [...new Set(report.jwks.map((fetch) => fetch.source))];
  for (const source of sources) {
    const fetches = report.jwks.filter((fetch) => fetch.source === source);
    lane(`JWKS fetches · ${source}`, 30, (top) =>
      fetches
        .map((fetch) => {
          const cx = x(fetch.atMs);
          return `<g class="jwks" data-outcome="${fetch.ok ? 'loaded' : 'failed'}" data-at-ms="${Math.round(fetch.atMs)}"><title>${escapeXml(`${secondsLabel(fetch.atMs)} JWKS ${fetch.ok ? 'loaded' : 'fetch failed, kept'}: ${fetch.kids.join(', ')}`)}</title><circle cx="${cx}" cy="${top + 20}" r="5" fill="${fetch.ok ? '#1565c0' : '#c62828'}"/>${fetch.kids.map((kid, index) => `<rect x="${cx + 7 + index * 7}" y="${top + 16}" width="5" height="8" fill="${kidColour(kid)}"/>`).join('')}</g>`;
        })
        .join(''),
      `${fetches.length} fetch${fetches.length === 1 ? '' : 'es'}`,
    );
  }

  if (report.proxyFaults.length > 0) {
    lane('proxy faults', 30, (top) =>
      report.proxyFaults
        .map((fault) => `<rect class="fault" data-kind="${escapeXml(fault.kind)}" data-at-ms="${Math.round(fault.atMs)}" x="${x(fault.atMs) - 1}" y="${top + 8}" width="2" height="16" fill="#6d4c41"><title>${escapeXml(`${secondsLabel(fault.atMs)} ${fault.kind}`)}</title></rect>`)
        .join(''),
      `${report.proxyFaults.length} faults`,
    );
  }

  // The operator's changes, over every lane.
  const events = labels.map(({ event, text, row }) => {
    const colour = EVENT_COLOURS[event.kind] ?? '#37474f';
    const start = x(event.atMs);
    const span = event.untilMs === undefined ? '' : `<rect x="${start}" y="${lanesTop}" width="${fixed(x(event.untilMs) - start)}" height="${y - lanesTop}" fill="${colour}" opacity="0.08"/>`;
    const labelY = labelTop + row * LABEL_ROW + 10;
    return `<g class="event" data-kind="${event.kind}" data-at-ms="${Math.round(event.atMs)}"${event.untilMs === undefined ? '' : ` data-until-ms="${Math.round(event.untilMs)}"`}><title>${escapeXml(`${secondsLabel(event.atMs)}${event.untilMs === undefined ? '' : `–${secondsLabel(event.untilMs)}`} ${event.label}`)}</title>${span}<line x1="${start}" y1="${labelY + 2}" x2="${start}" y2="${y}" stroke="${colour}" stroke-width="1.5" stroke-dasharray="4 3"/><text x="${start + 3}" y="${labelY}" class="event-label" fill="${colour}">${escapeXml(text)}</text></g>`;
  });

  return svg(y, 'Timeline of the run', [...parts, ...events].join(''));
}

/**
 * Rate-limit state per client that was ever refused: the burst it had left after each charged
 * request (a step line, from the predictor's log), and its 429s below, by violated policy.
 */
export function renderRateLimits(report: ScenarioReport): string | undefined {
  const refused = new Set(report.rateLimits.filter((point) => !point.allowed).map((point) => point.clientId));
  const clients = clientsOf(report).filter((clientId) => refused.has(clientId));
  if (clients.length === 0) return undefined;
  const x = (ms: number) => fixed(LEFT + (Math.max(0, Math.min(ms, report.endMs)) / report.endMs) * PLOT);
  const HEIGHT = 56;
  const parts: string[] = [];
  let y = 8;
  for (const clientId of clients) {
    const points = report.rateLimits.filter((point) => point.clientId === clientId);
    const top = Math.max(1, ...points.map((point) => point.remainingBurst + 1));
    const yOf = (remaining: number) => fixed(y + 4 + (1 - remaining / top) * (HEIGHT - 20));
    const path = stepPath(points, x, yOf);
    const refusals = points.filter((point) => !point.allowed);
    parts.push(`<rect x="0" y="${y}" width="${WIDTH}" height="${HEIGHT}" class="lane"/>`);
    parts.push(`<text x="8" y="${y + 14}" class="lane-title">${escapeXml(clientId)}</text><text x="8" y="${y + 27}" class="lane-subtitle">${points.length - refusals.length} admitted, ${refusals.length} × 429</text>`);
    parts.push(`<text x="${LEFT - 6}" y="${yOf(top - 1) + 4}" class="row-label" text-anchor="end">burst left ${top - 1}</text><text x="${LEFT - 6}" y="${yOf(0) + 4}" class="row-label" text-anchor="end">0</text>`);
    parts.push(`<path class="burst" data-client="${escapeXml(clientId)}" d="${path}" fill="none" stroke="#1565c0" stroke-width="1.5"/>`);
    for (const point of refusals) {
      const colour = point.violated === 'daily' ? '#6a1b9a' : OUTCOME_COLOURS['429'];
      parts.push(`<rect class="refusal" data-client="${escapeXml(clientId)}" data-policy="${escapeXml(point.violated ?? '')}" data-at-ms="${Math.round(point.atMs)}" x="${x(point.atMs) - 1}" y="${y + HEIGHT - 14}" width="2" height="10" fill="${colour}"><title>${escapeXml(`${secondsLabel(point.atMs)} 429 (${point.violated ?? '?'}); daily left ${point.remainingDaily}`)}</title></rect>`);
    }
    y += HEIGHT + 4;
  }
  return svg(y, 'Rate-limit state', parts.join(''));
}

function stepPath(points: RateLimitPoint[], x: (ms: number) => number, yOf: (remaining: number) => number): string {
  if (points.length === 0) return '';
  const [first, ...rest] = points;
  let d = `M${x(first!.atMs)} ${yOf(first!.remainingBurst)}`;
  for (const point of rest) d += ` H${x(point.atMs)} V${yOf(point.remainingBurst)}`;
  return d;
}

function svg(height: number, title: string, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${fixed(height)}" width="${WIDTH}" height="${fixed(height)}" role="img" aria-label="${escapeXml(title)}"><title>${escapeXml(title)}</title>${body}</svg>`;
}

/** 0.5, 1, 2 or 5 s, so that the axis has about a dozen ticks. */
function niceStep(endMs: number): number {
  for (const step of [500, 1_000, 2_000, 5_000, 10_000, 20_000]) if (endMs / step <= 14) return step;
  return 60_000;
}
