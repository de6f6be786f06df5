import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OUTCOMES, type ScenarioReport } from './collect.js';
import { clientsOf, escapeXml, OUTCOME_COLOURS, renderRateLimits, renderTimeline } from './svg.js';

/** No script, no font, no image from anywhere: the page is read offline, from a file or an artefact store. */
const STYLE = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1b1b1b; max-width: 1240px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 4px; color: #fff; font-weight: 600; margin-right: 8px; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
.meta { color: #555; margin: 4px 0 12px; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; padding-right: 14px; }
.ok { color: #2e7d32; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
svg { display: block; margin: 6px 0; max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
svg .lane { fill: #f6f7f9; } svg .lane-title { font-size: 12px; font-weight: 600; fill: #222; } svg .lane-subtitle, svg .row-label, svg .tick, svg .kid { font-size: 10px; fill: #555; }
svg .event-label { font-size: 11px; }
pre { background: #f6f7f9; padding: 10px; overflow-x: auto; font-size: 12px; }
`;

const page = (title: string, body: string) =>
  `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeXml(title)}</title><style>${STYLE}</style></head><body>${body}</body></html>\n`;

const badge = (passed: boolean) => `<span class="badge ${passed ? 'pass' : 'fail'}">${passed ? 'PASS' : 'FAIL'}</span>`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** One scenario run as a self-contained HTML page. */
export function renderReportPage(report: ScenarioReport): string {
  const clients = clientsOf(report);
  const present = OUTCOMES.filter((outcome) => report.requests.some((request) => request.outcome === outcome));
  const counts = clients
    .map((clientId) => {
      const mine = report.requests.filter((request) => request.clientId === clientId);
      const tokens = report.tokens.filter((token) => token.clientId === clientId && token.outcome === 'issued');
      return `<tr><td>${escapeXml(clientId)}</td>${present.map((outcome) => `<td class="num">${mine.filter((request) => request.outcome === outcome).length || ''}</td>`).join('')}<td class="num">${tokens.length || ''}</td></tr>`;
    })
    .join('');
  const rateLimits = renderRateLimits(report);
  const evidence = report.evidence
    .map((item) => `<tr><td class="${item.ok ? 'ok' : 'bad'}">${item.ok ? 'ok' : 'FAIL'}</td><td>${escapeXml(item.what)}</td><td>${escapeXml(String(item.observed))}</td><td>${escapeXml(item.expected)}</td></tr>`)
    .join('');
  const body = [
    `<h1>${badge(report.passed)}${escapeXml(report.name)}</h1>`,
    `<p>${escapeXml(report.summary)}</p>`,
    `<p class="meta">started ${escapeXml(report.startedAt)} · ${seconds(report.durationMs)} · ${report.requests.length} requests · ${report.tokens.filter((token) => token.outcome === 'issued').length} tokens · ${report.jwks.length} JWKS fetches · ${report.events.length} changes</p>`,
    `<h2>Checklist</h2><table class="evidence"><thead><tr><th></th><th>what</th><th>observed</th><th>expected</th></tr></thead><tbody>${evidence}</tbody></table>`,
    report.error ? `<h2>Error</h2><pre>${escapeXml(report.error)}</pre>` : '',
    `<h2>Timeline</h2>`,
    `<p class="legend">${present.map((outcome) => `<span><i style="background:${OUTCOME_COLOURS[outcome]}"></i>${escapeXml(outcome)}</span>`).join('')}<span>◆ token (kid above; colour per key)</span><span>● JWKS fetch (keys it held)</span><span>┆ change by the operator</span></p>`,
    `<p class="meta">Answers are the predictors' own log lines (time of the answer); connection failures are attempts a caller saw end without an answer.</p>`,
    renderTimeline(report),
    rateLimits ? `<h2>Rate limits</h2><p class="meta">Burst left after each charged request (predictor log); 429s below the line (yellow: bucket empty, purple: daily quota used up).</p>${rateLimits}` : '',
    `<h2>Requests per client</h2><table><thead><tr><th>client</th>${present.map((outcome) => `<th class="num">${escapeXml(outcome)}</th>`).join('')}<th class="num">tokens</th></tr></thead><tbody>${counts}</tbody></table>`,
    `<h2>Sequence (Mermaid)</h2><details><summary>source of the sequence diagram</summary><pre>${escapeXml(report.mermaid)}</pre></details>`,
  ].join('\n');
  return page(`${report.passed ? 'PASS' : 'FAIL'} ${report.name}`, body);
}

export interface IndexEntry {
  name: string;
  passed: boolean;
  durationMs: number;
  /** The scenario's page, relative to the index. */
  href: string;
  summary: string;
}

/** The index of a run of several scenarios. */
export function renderIndexPage(entries: IndexEntry[]): string {
  const failed = entries.filter((entry) => !entry.passed).length;
  const rows = entries
    .map((entry) => `<tr><td>${badge(entry.passed)}</td><td><a href="${escapeXml(entry.href)}">${escapeXml(entry.name)}</a></td><td class="num">${seconds(entry.durationMs)}</td><td>${escapeXml(entry.summary)}</td></tr>`)
    .join('');
  return page(
    `Scenarios: ${entries.length - failed} of ${entries.length} passed`,
    `<h1>${badge(failed === 0)}Scenarios: ${entries.length - failed} of ${entries.length} passed</h1><table><thead><tr><th></th><th>scenario</th><th class="num">duration</th><th>what it shows</th></tr></thead><tbody>${rows}</tbody></table>`,
  );
}

/** Writes `<dir>/<name>.html`; returns its path. */
export async function writeReportPage(dir: string, report: ScenarioReport): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${report.name}.html`);
  await writeFile(path, renderReportPage(report));
  return path;
}

/** Writes `<dir>/index.html`; returns its path. */
export async function writeIndexPage(dir: string, entries: IndexEntry[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'index.html');
  await writeFile(path, renderIndexPage(entries));
  return path;
}
