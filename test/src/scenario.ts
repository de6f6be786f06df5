import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { writeIndexPage } from './report/page.js';
import { formatResult, formatSummary, runScenario, SCENARIOS, type ScenarioResult } from './scenarios/index.js';

/** Exit codes: every scenario passed; one failed (or crashed); the command line was wrong; the runner itself failed (e.g. a report could not be written). */
export const EXIT = { passed: 0, failed: 1, usage: 2, internal: 3 } as const;

const USAGE = `usage: npm run -s scenario -- <name…|all> [--report <dir>] [--trace <file.mmd>]
       npm run -s scenario -- --list | --help

Runs scenarios against real processes on free ports and prints PASS/FAIL with the evidence.
(-s keeps npm's banner off stdout, so stdout is only the result.)

  <name…>          one or more scenario names (see --list); all: every scenario
  --report <dir>   write <dir>/<name>.html per scenario (self-contained: timeline,
                   tokens, JWKS fetches, rate limits, checklist), and <dir>/index.html
                   when more than one ran
  --trace <file>   write the Mermaid sequence diagram (with several scenarios,
                   <file>-<name>.mmd each)
  --list           the scenarios, one per line
  --help           this text

exit codes: 0 all passed, 1 a scenario failed, 2 usage error, 3 the runner failed
`;

function usageError(message: string): never {
  process.stderr.write(`scenario: ${message}\n\n${USAGE}`);
  process.exit(EXIT.usage);
}

let parsed: ReturnType<typeof parse>;
const parse = () =>
  parseArgs({
    allowPositionals: true,
    options: { list: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false }, trace: { type: 'string' }, report: { type: 'string' } },
  });
try {
  parsed = parse();
} catch (error) {
  usageError((error as Error).message);
}
const { values, positionals } = parsed;

if (values.help) {
  process.stdout.write(USAGE);
  process.exit(EXIT.passed);
}
if (values.list) {
  for (const scenario of SCENARIOS) process.stdout.write(`${scenario.name.padEnd(26)} ${scenario.summary}\n`);
  process.exit(EXIT.passed);
}
if (positionals.length === 0) usageError('name a scenario, or all');
const unknown = positionals.filter((name) => name !== 'all' && !SCENARIOS.some((scenario) => scenario.name === name));
if (unknown.length > 0) usageError(`unknown scenario ${unknown.join(', ')} (see --list)`);
const wanted = positionals.includes('all') ? SCENARIOS : SCENARIOS.filter((scenario) => positionals.includes(scenario.name));

try {
  const results: ScenarioResult[] = [];
  for (const scenario of wanted) {
    const tracePath = values.trace && (wanted.length === 1 ? values.trace : values.trace.replace(/(\.\w+)?$/, `-${scenario.name}$1`));
    const result = await runScenario(scenario, { ...(tracePath ? { tracePath } : {}), ...(values.report ? { reportDir: values.report } : {}) });
    results.push(result);
    const written = [tracePath && `  trace: ${tracePath}`, result.reportPath && `  report: ${result.reportPath}`].filter(Boolean);
    process.stdout.write(`${formatResult(result)}\n${written.map((line) => `${line}\n`).join('')}\n`);
  }
  if (wanted.length > 1) {
    if (values.report) {
      const dir = values.report;
      const index = await writeIndexPage(
        dir,
        results.map((result) => ({ ...result, href: relative(dir, result.reportPath ?? join(dir, `${result.name}.html`)), summary: wanted.find((scenario) => scenario.name === result.name)!.summary })),
      );
      process.stdout.write(`report index: ${index}\n\n`);
    }
    process.stdout.write(`${formatSummary(results)}\n`);
  }
  process.exit(results.every((result) => result.passed) ? EXIT.passed : EXIT.failed);
} catch (error) {
  // A scenario's own failure is in its result; this is the runner failing (a report it could not write).
  process.stderr.write(`scenario: ${(error as Error).message}\n`);
  process.exit(EXIT.internal);
}
