// The end-to-end test files for `npm test`, the longest first: two run at a time, and a long
// file started last would finish alone (the scenarios took 145 s and came last in name order).
import { readdirSync } from 'node:fs';

/** The longest files, longest first (durations from the spec output of a CI run); the rest follow in name order. */
const LONGEST = ['scenarios-operations', 'scenarios-tokens', 'caller-pacing', 'bench', 'shutdown', 'scale-out'];

const files = readdirSync(new URL('../e2e/', import.meta.url)).filter((name) => name.endsWith('.test.ts')).sort();
const rank = (name) => {
  const index = LONGEST.indexOf(name.replace(/\.test\.ts$/, ''));
  return index === -1 ? LONGEST.length : index;
};
const ordered = files.map((name, index) => ({ name, index })).sort((a, b) => rank(a.name) - rank(b.name) || a.index - b.index);
console.log(ordered.map(({ name }) => `test/e2e/${name}`).join('\n'));
