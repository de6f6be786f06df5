import { SCENARIOS, type Scenario } from './catalogue.js';
import { ScenarioRun, type Evidence } from './framework.js';

export { SCENARIOS, type Scenario };

export interface ScenarioResult {
  name: string;
  passed: boolean;
  evidence: Evidence[];
  /** Set when the scenario itself crashed. */
  error?: string;
  durationMs: number;
}

/** Runs one scenario on its own servers; with `tracePath`, writes its Mermaid sequence diagram there. */
export async function runScenario(scenario: Scenario, options: { tracePath?: string } = {}): Promise<ScenarioResult> {
  const started = performance.now();
  const run = await ScenarioRun.start({ authEnv: scenario.authEnv ?? {}, predictorEnv: scenario.predictorEnv ?? {}, plans: scenario.plans });
  let error: string | undefined;
  try {
    await scenario.run(run);
  } catch (caught) {
    error = caught instanceof Error ? (caught.stack ?? caught.message) : String(caught);
  } finally {
    await run.stop().catch((caught: unknown) => {
      error ??= caught instanceof Error ? caught.message : String(caught);
    });
  }
  if (options.tracePath) await run.trace.write(options.tracePath, `${scenario.name}: ${scenario.summary}`);
  const passed = error === undefined && run.evidence.length > 0 && run.evidence.every((item) => item.ok);
  return { name: scenario.name, passed, evidence: run.evidence, ...(error ? { error } : {}), durationMs: performance.now() - started };
}

/** The evidence table a person reads. */
export function formatResult(result: ScenarioResult): string {
  const width = Math.max(10, ...result.evidence.map((item) => item.what.length));
  const rows = result.evidence.map((item) => `  ${item.ok ? 'ok  ' : 'FAIL'}  ${item.what.padEnd(width)}  ${String(item.observed).padEnd(12)}  expected ${item.expected}`);
  return [`${result.passed ? 'PASS' : 'FAIL'} ${result.name} (${(result.durationMs / 1000).toFixed(1)} s)`, ...rows, ...(result.error ? [`  error: ${result.error}`] : [])].join('\n');
}
