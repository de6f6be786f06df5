import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory } from '../src/harness/processes.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

describe('npm run bench (smoke: one short round, so the harness cannot rot)', () => {
  let dir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let bench: ReturnType<typeof startTypeScript>;
  let result: BenchResult;
  before(async () => {
    dir = await temporaryDirectory('bench');
    const out = `${dir.path}/bench.json`;
    bench = startTypeScript('bench', 'bench/src/bench.ts', {}, ['--rounds', '1', '--duration', '1', '--connections', '10', '--profile', '--relay-events', '2000', '--out', out]);
    const { code } = await bench.exited;
    assert.equal(code, 0, bench.output());
    result = JSON.parse(await readFile(out, 'utf8')) as BenchResult;
  });
  after(() => dir?.remove());

  it('measures every configuration and the usage relay, checks every answer was 200, prints the table and writes the JSON', () => {
    assert.match(bench.stdoutLines.join('\n'), /\| B predictor \(memory\) \| \d+/);
    assert.deepEqual(result.configurations.map((row) => row.name), ['A bare hono', 'B predictor (memory)', 'B predictor (sqlite)', 'C express stack']);
    assert.ok(result.configurations.every((row) => row.allOk));
    assert.ok(result.configurations.every((row) => row.cpuMicrosPerRequest > 0), 'server CPU per request measured for every configuration');
    // --profile: both profiles were written, read and grouped; the table compares them per request.
    assert.ok(result.profile.b.requests > 0 && result.profile.b.busyMs > 0);
    assert.ok(result.profile.b.concerns.some((entry) => entry.concern === 'request log (pino)'), 'the predictor logs every request');
    assert.ok(!result.profile.a.concerns.some((entry) => entry.concern === 'request log (pino)'), 'the bare route logs nothing');
    assert.match(bench.stdoutLines.join('\n'), /\| concern \| A bare hono \| B predictor \(memory\) \| B − A \|/);
    assert.equal(result.distributed.name, 'B predictor (dist)');
    assert.ok(result.tokenIssuance.tokensPerSecond > 0);
    assert.equal(result.tokenIssuance.allOk, true, 'the token load was answered with tokens, not errors');
    assert.equal(typeof result.callerOverheadMicrosPerCall, 'number');
    // A and B offered the same evenly spaced load, every answer 200.
    assert.ok(result.sameLoad.rate > 0 && result.sameLoad.allOk && result.sameLoad.a.p99 > 0 && result.sameLoad.b.p99 > 0);
    // The relay from outbox to ledger: the embedded path everywhere (the JetStream path in the next test). Every event reached the ledger once.
    assert.equal(result.relay.targetEventsPerSecond, 5000);
    assert.deepEqual(result.relay.paths.map((path) => path.path), ['SQLite outbox → in-process SQLite ledger', 'PostgreSQL outbox → JetStream → usage-ledger → PostgreSQL ledger']);
    assertRelayed(result.relay.paths[0]!);
    assert.match(bench.stdoutLines.join('\n'), /usage relay, outbox to ledger \(2000 events each, target ≥ 5000 events\/s\):\n {2}SQLite outbox → in-process SQLite ledger: \d+ events\/s/);
  });

  // .ci/run starts Redis, PostgreSQL and NATS, so these run there; without them the bench itself skips them, saying why.
  it('runs the distributed configuration and the JetStream relay path on the real engines', { skip: skipUnlessEngines(['redis', 'postgres', 'nats']) }, () => {
    assert.equal(result.distributed.skipped, false, result.distributed.reason);
    assert.equal(result.distributed.allOk, true);
    assertRelayed(result.relay.paths[1]!);
  });
});

function assertRelayed(path: BenchResult['relay']['paths'][number]): void {
  assert.equal(path.skipped, false, path.reason);
  assert.equal(path.events, 2000);
  assert.ok(path.eventsPerSecond! > 0);
}

interface BenchResult {
  configurations: { name: string; allOk: boolean; cpuMicrosPerRequest: number }[];
  distributed: { name: string; skipped: boolean; allOk?: boolean; reason?: string };
  tokenIssuance: { tokensPerSecond: number; allOk: boolean };
  profile: { a: { busyMs: number; concerns: { concern: string; share: number }[] }; b: { busyMs: number; requests: number; concerns: { concern: string; share: number }[] } };
  callerOverheadMicrosPerCall: number;
  sameLoad: { rate: number; a: { p99: number }; b: { p99: number }; allOk: boolean };
  relay: { targetEventsPerSecond: number; events: number; paths: { path: string; skipped: boolean; reason?: string; events?: number; eventsPerSecond?: number }[] };
}
