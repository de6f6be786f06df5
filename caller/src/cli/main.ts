import { text } from 'node:stream/consumers';
import { INTERRUPTED_EXIT_CODE } from './batch.js';
import { runCli } from './run.js';

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: (output) => process.stdout.write(output),
  stderr: (output) => process.stderr.write(output),
  readStdin: () => text(process.stdin),
  stderrIsTty: process.stderr.isTTY === true,
  env: process.env,
  cwd: process.cwd(),
  interrupts: () => {
    // The first SIGINT stops the work cleanly (the batch reports and says how to resume); a second one exits at once.
    const interrupted = new AbortController();
    process.once('SIGINT', () => {
      process.stderr.write('\ncaller: interrupted; stopping (press Ctrl-C again to exit at once)\n');
      interrupted.abort(new Error('interrupted (SIGINT)'));
      process.once('SIGINT', () => process.exit(INTERRUPTED_EXIT_CODE));
    });
    return interrupted.signal;
  },
});
