import { parseArgs } from 'node:util';
import { formatResult, runScenario, SCENARIOS } from './scenarios/index.js';

// `npm run scenario -- <name> [--trace file.mmd]`, `-- all`, `-- --list`.
const { values, positionals } = parseArgs({ allowPositionals: true, options: { list: { type: 'boolean', default: false }, trace: { type: 'string' } } });
if (values.list || positionals.length === 0) {
  for (const scenario of SCENARIOS) process.stdout.write(`${scenario.name.padEnd(26)} ${scenario.summary}\n`);
  process.exit(positionals.length === 0 && !values.list ? 2 : 0);
}
const wanted = positionals[0] === 'all' ? SCENARIOS : SCENARIOS.filter((scenario) => positionals.includes(scenario.name));
const unknown = positionals.filter((name) => name !== 'all' && !SCENARIOS.some((scenario) => scenario.name === name));
if (unknown.length > 0) {
  process.stderr.write(`scenario: unknown ${unknown.join(', ')}; see --list\n`);
  process.exit(2);
}
let failed = 0;
for (const scenario of wanted) {
  const tracePath = values.trace && (wanted.length === 1 ? values.trace : values.trace.replace(/(\.\w+)?$/, `-${scenario.name}$1`));
  const result = await runScenario(scenario, tracePath ? { tracePath } : {});
  process.stdout.write(`${formatResult(result)}\n${tracePath ? `  trace: ${tracePath}\n` : ''}\n`);
  if (!result.passed) failed += 1;
}
process.exit(failed === 0 ? 0 : 1);
