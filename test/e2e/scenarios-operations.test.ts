import { after, before, describe } from 'node:test';
import { temporaryDirectory } from '../src/harness/processes.js';
import { itRunsScenarios, SCENARIO_HALVES } from '../src/scenarios/testing.js';

describe('scenarios (server-side evidence): limits, lost answers, outages and metering', () => {
  let traces: Awaited<ReturnType<typeof temporaryDirectory>>;
  before(async () => {
    traces = await temporaryDirectory('traces');
  });
  after(() => traces.remove());

  itRunsScenarios(SCENARIO_HALVES.operations, () => traces.path);
});
