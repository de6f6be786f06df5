import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parseRetryAfter } from './retry-after.js';

// Monday, 23 November 2026, 12:00:00 GMT. The real clock is never used.
const NOW_MS = Date.UTC(2026, 10, 23, 12, 0, 0);

/** Expected delay until a GMT instant (Date.UTC month is 0-based). */
function msUntil(...utc: [number, number, number, number, number, number]): number {
  return Date.UTC(...utc) - NOW_MS;
}

interface Case {
  header: string | null | undefined;
  expected: number | undefined;
  nowMs?: number;
}

const cases: Record<string, Case[]> = {
  'delay-seconds': [
    { header: '0', expected: 0 },
    { header: '2', expected: 2_000 },
    { header: '120', expected: 120_000 },
    { header: '  120  ', expected: 120_000 },
    { header: '\t2\t', expected: 2_000 },
    { header: '007', expected: 7_000 },
    { header: '99999999999999999999', expected: Number.MAX_SAFE_INTEGER },
    { header: '9'.repeat(400), expected: Number.MAX_SAFE_INTEGER },
  ],
  'invalid delay-seconds': [
    { header: '-1', expected: undefined },
    { header: '+1', expected: undefined },
    { header: '1.5', expected: undefined },
    { header: '1e3', expected: undefined },
    { header: ' 0x10', expected: undefined },
    { header: '1 2', expected: undefined },
    { header: '12s', expected: undefined },
    { header: '١٢', expected: undefined },
    { header: 'Infinity', expected: undefined },
  ],
  'absent, empty or garbage': [
    { header: null, expected: undefined },
    { header: undefined, expected: undefined },
    { header: '', expected: undefined },
    { header: '   ', expected: undefined },
    { header: 'soon', expected: undefined },
    { header: '2026-11-23T12:00:30Z', expected: undefined },
  ],
  'IMF-fixdate': [
    { header: 'Mon, 23 Nov 2026 12:00:30 GMT', expected: 30_000 },
    { header: '  Mon, 23 Nov 2026 12:00:30 GMT ', expected: 30_000 },
    { header: 'Mon, 23 Nov 2026 12:00:00 GMT', expected: 0 },
    { header: 'Sun, 06 Nov 1994 08:49:37 GMT', expected: 0 },
    { header: 'Tue, 01 Dec 2026 12:00:00 GMT', expected: msUntil(2026, 11, 1, 12, 0, 0) },
    { header: 'Fri, 31 Dec 9999 23:59:59 GMT', expected: msUntil(9999, 11, 31, 23, 59, 59) },
    // Leap second: read as 59.
    { header: 'Mon, 23 Nov 2026 12:00:60 GMT', expected: 59_000 },
    // The day-name is not checked against the date.
    { header: 'Fri, 23 Nov 2026 12:00:30 GMT', expected: 30_000 },
  ],
  'obsolete RFC 850 date': [
    { header: 'Monday, 23-Nov-26 12:01:00 GMT', expected: 60_000 },
    { header: 'Monday, 23-Nov-26 12:00:00 GMT', expected: 0 },
    { header: 'Sunday, 06-Nov-94 08:49:37 GMT', expected: 0 },
  ],
  'two-digit years': [
    { header: 'Tuesday, 23-Nov-27 12:00:00 GMT', expected: msUntil(2027, 10, 23, 12, 0, 0) },
    // Exactly 50 years ahead is not "more than 50 years", so it stays in the future...
    { header: 'Monday, 23-Nov-76 12:00:00 GMT', expected: msUntil(2076, 10, 23, 12, 0, 0) },
    // ...one second later it is 1976.
    { header: 'Monday, 23-Nov-76 12:00:01 GMT', expected: 0 },
    { header: 'Saturday, 01-Jan-00 00:00:00 GMT', expected: 0 },
    // 2000 was a leap year; 2027 is not.
    { header: 'Tuesday, 29-Feb-00 00:00:00 GMT', expected: 0 },
    { header: 'Tuesday, 29-Feb-28 00:00:00 GMT', expected: msUntil(2028, 1, 29, 0, 0, 0) },
    { header: 'Monday, 29-Feb-27 00:00:00 GMT', expected: undefined },
    // Near the end of a century the nearest year is in the next one.
    {
      header: 'Saturday, 01-Jan-01 00:00:00 GMT',
      nowMs: Date.UTC(2099, 0, 1),
      expected: Date.UTC(2101, 0, 1) - Date.UTC(2099, 0, 1),
    },
  ],
  'asctime date': [
    { header: 'Mon Nov 23 14:00:00 2026', expected: 2 * 3_600_000 },
    { header: 'Mon Nov 23 12:00:00 2026', expected: 0 },
    { header: 'Sun Nov  6 08:49:37 1994', expected: 0 },
    { header: 'Tue Dec  1 12:00:00 2026', expected: 8 * 86_400_000 },
    { header: 'Tue Dec 01 12:00:00 2026', expected: 8 * 86_400_000 },
  ],
  'wrong or missing zone': [
    { header: 'Mon, 23 Nov 2026 12:00:30 +0000', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00:30 UTC', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00:30 PST', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00:30 gmt', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00:30', expected: undefined },
    { header: 'Monday, 23-Nov-26 12:01:00 UTC', expected: undefined },
    { header: 'Mon Nov 23 14:00:00 2026 GMT', expected: undefined },
  ],
  'invalid dates': [
    { header: 'Mon, 30 Feb 2026 12:00:00 GMT', expected: undefined },
    { header: 'Sun, 29 Feb 2026 12:00:00 GMT', expected: undefined },
    { header: 'Tue, 29 Feb 2028 12:00:00 GMT', expected: msUntil(2028, 1, 29, 12, 0, 0) },
    { header: 'Thu, 31 Apr 2027 12:00:00 GMT', expected: undefined },
    { header: 'Mon, 00 Nov 2026 12:00:00 GMT', expected: undefined },
    { header: 'Mon, 32 Dec 2026 12:00:00 GMT', expected: undefined },
    { header: 'Mon, 23 Nov 2026 24:00:00 GMT', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:60:00 GMT', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00:61 GMT', expected: undefined },
    { header: 'Mon, 23 Foo 2026 12:00:00 GMT', expected: undefined },
    { header: 'Mon Foo 23 12:00:00 2026', expected: undefined },
    { header: 'Monday, 23-Foo-26 12:00:00 GMT', expected: undefined },
    { header: 'Tuesday, 30-Feb-27 12:00:00 GMT', expected: undefined },
    { header: 'Mon Nov 23 24:00:00 2026', expected: undefined },
  ],
  'malformed dates': [
    { header: 'Foo, 23 Nov 2026 12:00:30 GMT', expected: undefined },
    { header: 'Monday, 23 Nov 2026 12:00:30 GMT', expected: undefined },
    { header: 'Mon, 23-Nov-26 12:00:30 GMT', expected: undefined },
    { header: 'mon, 23 Nov 2026 12:00:30 GMT', expected: undefined },
    { header: 'Mon, 23 NOV 2026 12:00:30 GMT', expected: undefined },
    { header: 'Mon, 6 Nov 2026 12:00:30 GMT', expected: undefined },
    { header: 'Mon, 23 Nov 26 12:00:30 GMT', expected: undefined },
    { header: 'Mon,  23 Nov 2026 12:00:30 GMT', expected: undefined },
    { header: 'Mon, 23 Nov 2026 12:00 GMT', expected: undefined },
    { header: 'Mon Nov 6 08:49:37 1994', expected: undefined },
    { header: 'Mon Nov 23 14:00:00 26', expected: undefined },
  ],
};

describe('parseRetryAfter', () => {
  for (const [group, rows] of Object.entries(cases)) {
    describe(group, () => {
      for (const { header, expected, nowMs = NOW_MS } of rows) {
        it(`${JSON.stringify(header)} -> ${expected}`, () => {
          assert.equal(parseRetryAfter(header, nowMs), expected);
        });
      }
    });
  }

  it('rejects a non-finite now', () => {
    assert.throws(() => parseRetryAfter('1', Number.NaN), RangeError);
  });
});

const CHILD_TIME_ZONES = ['America/Los_Angeles', 'Asia/Kolkata'];

if (process.env.RETRY_AFTER_CHILD) {
  // Guards against a TZ that silently fell back to UTC, which would make the child run prove nothing.
  it(`runs in time zone ${process.env.TZ}, which is not UTC`, () => {
    assert.notEqual(new Date(NOW_MS).getTimezoneOffset(), 0);
  });
} else {
  describe('is independent of the process time zone', () => {
    for (const timeZone of CHILD_TIME_ZONES) {
      it(`passes the same table with TZ=${timeZone}`, async () => {
        const { exitCode, output } = await runThisFileWithTimeZone(timeZone);
        assert.equal(exitCode, 0, output);
        // A run that executed no test would also exit 0.
        assert.match(output, /^# pass [1-9]\d*$/m, output);
      });
    }
  });
}

function runThisFileWithTimeZone(timeZone: string): Promise<{ exitCode: number | null; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, TZ: timeZone, RETRY_AFTER_CHILD: '1' };
  // Set by the test runner for its own workers; inherited, it would make the child report in the wrong format.
  delete env.NODE_TEST_CONTEXT;
  const args = ['--import', 'tsx', '--test', '--test-reporter=tap', fileURLToPath(import.meta.url)];
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode) => resolve({ exitCode, output }));
  });
}
