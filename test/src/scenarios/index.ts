import { SCENARIOS, type Scenario } from './catalogue.js';
import { stopAll } from '../harness/processes.js';
import { collectReport } from '../report/collect.js';
import { writeReportPage } from '../report/page.js';
import { Timeline } from '../report/timeline.js';
import { ScenarioRun, type Evidence } from './framework.js';
import { stolenToken } from './stolen-token.js';

// Scenarios in files of their own, registered beside the catalogue's.
SCENARIOS.push(stolenToken);

export { SCENARIOS, type Scenario };

export interface ScenarioResult {
  name: string;
  passed: boolean;
  evidence: Evidence[];
  /** Set when the scenario itself crashed. */
  error?: string;
  durationMs: number;
  /** The HTML report, when one was asked for. */
  reportPath?: string;
}

/**
 * Runs one scenario on its own servers; with `tracePath`, writes its Mermaid sequence diagram there;
 * with `reportDir`, its HTML report as `<reportDir>/<name>.html`.
 */
export async function runScenario(scenario: Scenario, options: { tracePath?: string; reportDir?: string } = {}): Promise<ScenarioResult> {
  const started = performance.now();
  let run: ScenarioRun;
  try {
    run = await ScenarioRun.start({ authEnv: scenario.authEnv ?? {}, predictorEnv: scenario.predictorEnv ?? {}, plans: scenario.plans });
  } catch (caught) {
    // Its servers did not start: the scenario fails (with why), the others still run.
    await stopAll().catch(() => {});
    const result: ScenarioResult = { name: scenario.name, passed: false, evidence: [], error: `could not start the servers: ${caught instanceof Error ? caught.message : String(caught)}`, durationMs: performance.now() - started };
    if (options.reportDir) result.reportPath = await writeReportPage(options.reportDir, collectReport({ timeline: new Timeline(), predictors: [] }, { ...result, summary: scenario.summary, mermaid: '' }));
    return result;
  }
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
  const title = `${scenario.name}: ${scenario.summary}`;
  if (options.tracePath) await run.trace.write(options.tracePath, title);
  const passed = error === undefined && run.evidence.length > 0 && run.evidence.every((item) => item.ok);
  const result: ScenarioResult = { name: scenario.name, passed, evidence: run.evidence, ...(error ? { error } : {}), durationMs: performance.now() - started };
  if (options.reportDir) {
    const predictors = run.predictors.map((predictor) => ({ name: `predictor :${predictor.port}`, records: predictor.process.records }));
    const report = collectReport({ timeline: run.timeline, predictors }, { ...result, summary: scenario.summary, mermaid: run.trace.render(title) });
    result.reportPath = await writeReportPage(options.reportDir, report);
  }
  return result;
}

/** The evidence table a person reads. */
export function formatResult(result: ScenarioResult): string {
  const width = Math.max(10, ...result.evidence.map((item) => item.what.length));
  const rows = result.evidence.map((item) => `  ${item.ok ? 'ok  ' : 'FAIL'}  ${item.what.padEnd(width)}  ${String(item.observed).padEnd(12)}  expected ${item.expected}`);
  return [`${result.passed ? 'PASS' : 'FAIL'} ${result.name} (${(result.durationMs / 1000).toFixed(1)} s)`, ...rows, ...(result.error ? [`  error: ${result.error}`] : [])].join('\n');
}

/** The table that ends a run of several scenarios: one line each, then the count. */
export function formatSummary(results: ScenarioResult[]): string {
  const width = Math.max(8, ...results.map((result) => result.name.length));
  const failed = results.filter((result) => !result.passed).length;
  return [
    `${'scenario'.padEnd(width)}  result  duration`,
    ...results.map((result) => `${result.name.padEnd(width)}  ${result.passed ? 'PASS' : 'FAIL'}    ${`${(result.durationMs / 1000).toFixed(1)} s`.padStart(8)}`),
    `${results.length - failed} of ${results.length} passed`,
  ].join('\n');
}
