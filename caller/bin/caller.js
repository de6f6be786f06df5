#!/usr/bin/env node
// Runs the compiled CLI, dist/caller.js (see build.js): plain JavaScript, no TypeScript
// loader at run time. In a checkout, a bundle older than its sources is rebuilt first.
import { freshBundle } from './build.js';

await import(await freshBundle());
