import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatUsageTable, usageReport } from './report.js';

const TOTALS = [
  { clientId: 'client-a', day: '2024-03-01', predictions: 2, rows: 6 },
  { clientId: 'batch-importer', day: '2024-03-01', predictions: 1200, rows: 98_000 },
  { clientId: 'client-a', day: '2024-03-02', predictions: 1, rows: 7 },
];

describe('usageReport', () => {
  it('carries the filter (null where none), the totals and their sum', () => {
    assert.deepEqual(usageReport(TOTALS, { clientId: 'client-a' }), {
      filter: { clientId: 'client-a', day: null },
      totals: TOTALS,
      sum: { predictions: 1203, rows: 98_013 },
    });
  });

  it('sums an empty report to zero', () => {
    assert.deepEqual(usageReport([]), { filter: { clientId: null, day: null }, totals: [], sum: { predictions: 0, rows: 0 } });
  });

  it('round-trips through JSON unchanged', () => {
    const report = usageReport(TOTALS, { day: '2024-03-01' });
    assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
  });
});

describe('formatUsageTable', () => {
  it('aligns columns, counts to the right, with a TOTAL line', () => {
    assert.equal(
      formatUsageTable(usageReport(TOTALS)),
      [
        'DAY         CLIENT          PREDICTIONS   ROWS',
        '2024-03-01  client-a                  2      6',
        '2024-03-01  batch-importer         1200  98000',
        '2024-03-02  client-a                  1      7',
        'TOTAL                              1203  98013',
        '',
      ].join('\n'),
    );
  });

  it('says so in one line when nothing matches, naming the filter', () => {
    assert.equal(formatUsageTable(usageReport([])), 'No usage recorded.\n');
    assert.equal(formatUsageTable(usageReport([], { clientId: 'client-a', day: '2024-03-01' })), 'No usage recorded for client client-a on 2024-03-01.\n');
  });

  it('never writes a control character of a client id to the terminal', () => {
    const table = formatUsageTable(usageReport([{ clientId: 'evil\u001b[2Jclient\n', day: '2024-03-01', predictions: 1, rows: 1 }]));
    assert.match(table, /evil\\u001b\[2Jclient\\u000a/);
    assert.doesNotMatch(table, /\u001b/);
    assert.equal(table.split('\n').length, 4);
  });
});
