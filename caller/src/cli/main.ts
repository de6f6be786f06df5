import { text } from 'node:stream/consumers';
import { runCli } from './run.js';

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: (output) => process.stdout.write(output),
  stderr: (output) => process.stderr.write(output),
  readStdin: () => text(process.stdin),
  stderrIsTty: process.stderr.isTTY === true,
  env: process.env,
  cwd: process.cwd(),
});
