import type { UsageFilter, UsageTotal } from './ledger.js';

/** What `npm run usage -- report --json` prints and `GET /v1/usage` returns. */
export interface UsageReport {
  /** The filter applied; null where none was. */
  filter: { clientId: string | null; day: string | null };
  /** Per client per UTC day, ordered by day, then client id. */
  totals: UsageTotal[];
  /** Summed over `totals`. */
  sum: { predictions: number; rows: number };
}

export function usageReport(totals: readonly UsageTotal[], filter: UsageFilter = {}): UsageReport {
  return {
    filter: { clientId: filter.clientId ?? null, day: filter.day ?? null },
    totals: totals.map((total) => ({ clientId: total.clientId, day: total.day, predictions: total.predictions, rows: total.rows })),
    sum: {
      predictions: totals.reduce((sum, total) => sum + total.predictions, 0),
      rows: totals.reduce((sum, total) => sum + total.rows, 0),
    },
  };
}

const HEADER = ['DAY', 'CLIENT', 'PREDICTIONS', 'ROWS'] as const;
/** Text columns are left-aligned, counts right-aligned. */
const RIGHT_ALIGNED = [false, false, true, true] as const;

/** The report as a plain-text table for a terminal, with a TOTAL line; one line saying so when it is empty. */
export function formatUsageTable(report: UsageReport): string {
  if (report.totals.length === 0) return `No usage recorded${describeFilter(report.filter)}.\n`;
  const lines: string[][] = [
    [...HEADER],
    ...report.totals.map((total) => [total.day, printable(total.clientId), String(total.predictions), String(total.rows)]),
    ['TOTAL', '', String(report.sum.predictions), String(report.sum.rows)],
  ];
  const widths = HEADER.map((_, column) => Math.max(...lines.map((line) => line[column]!.length)));
  const render = (line: string[]): string =>
    line
      .map((cell, column) => (RIGHT_ALIGNED[column] ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return `${lines.map(render).join('\n')}\n`;
}

function describeFilter(filter: UsageReport['filter']): string {
  const parts = [filter.clientId === null ? undefined : `for client ${printable(filter.clientId)}`, filter.day === null ? undefined : `on ${filter.day}`];
  const text = parts.filter(Boolean).join(' ');
  return text === '' ? '' : ` ${text}`;
}

/** A client id comes from outside: control characters are shown escaped, never sent to the terminal. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
