import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory } from '../src/harness/processes.js';

describe('npm run bench (smoke: one short round, so the harness cannot rot)', () => {
  it('measures every configuration, checks every answer was 200, prints the table and writes the JSON', async () => {
    const dir = await temporaryDirectory('bench');
    const out = `${dir.path}/bench.json`;
    const bench = startTypeScript('bench', 'bench/src/bench.ts', {}, ['--rounds', '1', '--duration', '1', '--connections', '10', '--out', out]);
    const { code } = await bench.exited;
    assert.equal(code, 0, bench.output());
    assert.match(bench.stdoutLines.join('\n'), /\| B predictor \(memory\) \| \d+/);
    const result = JSON.parse(await readFile(out, 'utf8')) as {
      configurations: { name: string; allOk: boolean }[];
      distributed: { name: string; skipped: boolean; allOk?: boolean; reason?: string };
      tokenIssuance: { tokensPerSecond: number };
      callerOverheadMicrosPerCall: number;
    };
    assert.deepEqual(result.configurations.map((row) => row.name), ['A bare hono', 'B predictor (memory)', 'B predictor (sqlite)', 'C express stack']);
    assert.ok(result.configurations.every((row) => row.allOk));
    // .ci/run starts Redis and PostgreSQL, so the distributed configuration runs here too.
    assert.equal(result.distributed.name, 'B predictor (dist)');
    assert.equal(result.distributed.skipped, false, result.distributed.reason);
    assert.equal(result.distributed.allOk, true);
    assert.ok(result.tokenIssuance.tokensPerSecond > 0);
    assert.equal(typeof result.callerOverheadMicrosPerCall, 'number');
    await dir.remove();
  });
});
