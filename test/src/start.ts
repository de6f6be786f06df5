import { spawn, type ChildProcess } from 'node:child_process';
import { REPOSITORY_ROOT } from './harness/processes.js';

// `npm start`: both servers in the foreground on their configured ports (dev.env loaded
// by the npm script), logs on stdout; SIGINT/SIGTERM stops both gracefully.
const services = ['auth-server', 'predictor'] as const;
const children = new Map<string, ChildProcess>();
let stopping = false;

for (const service of services) {
  const child = spawn(process.execPath, ['--import', 'tsx', `${service}/src/main.ts`], { cwd: REPOSITORY_ROOT, env: process.env, stdio: 'inherit' });
  children.set(service, child);
  child.once('exit', (code, signal) => {
    children.delete(service);
    if (!stopping) {
      process.stderr.write(`start: ${service} exited (code ${code}, signal ${signal}); stopping the rest\n`);
      process.exitCode = 1;
      stop();
    }
  });
}

function stop(): void {
  stopping = true;
  for (const child of children.values()) child.kill('SIGTERM');
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, stop);
