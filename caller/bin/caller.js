#!/usr/bin/env node
// Runs the TypeScript CLI in place through tsx; container images run the compiled dist/ instead.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
