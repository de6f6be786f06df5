#!/usr/bin/env node
// `npm run build [-- --outdir <dir>] [--entry <name>=<source> ...]`: bundles every entry of
// build-entries.mjs into `<outdir>/<name>.js` (default `dist/` at the repository root) for
// the container images; with `--entry` (the bench's peers) only the entries given.
//
// The workspaces (`@m2m/*`, `caller`) export TypeScript sources, so they are bundled in;
// every third-party package stays external and is resolved from node_modules at run
// time, which is why an image ships `dist/` next to the production `node_modules/`.
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';
import { ENTRIES, isWorkspacePackage } from './build-entries.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Marks a bare import external unless it names a workspace package (those are TypeScript to bundle). */
const externalThirdParty = {
  name: 'external-third-party',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      // Entry points are given as paths relative to the root and look like bare names.
      if (args.kind === 'entry-point' || isWorkspacePackage(args.path)) return undefined;
      return { path: args.path, external: true };
    });
  },
};

async function main() {
  const { values } = parseArgs({ options: { outdir: { type: 'string', default: 'dist' }, entry: { type: 'string', multiple: true, default: [] } } });
  const requested = values.entry.map((spec) => {
    const separator = spec.indexOf('=');
    const [name, source] = [spec.slice(0, separator), spec.slice(separator + 1)];
    if (separator < 0 || !/^[\w-]+$/.test(name) || !source) throw new Error(`--entry takes <name>=<source> with a name of letters, digits, _ and -, got ${spec}`);
    if (!existsSync(join(ROOT, source))) throw new Error(`--entry ${name}: ${source} does not exist`);
    return { name, source };
  });
  const outdir = resolve(ROOT, values.outdir);
  if (outdir === ROOT || !relative(outdir, ROOT).startsWith('..')) {
    // The chunks folder is cleared below; never let that be the repository or above it.
    throw new Error(`--outdir must not be the repository or a folder above it: ${outdir}`);
  }

  const entries = (requested.length > 0 ? requested : ENTRIES).filter((entry) => {
    if (existsSync(join(ROOT, entry.source))) return true;
    process.stdout.write(`build: skipping ${entry.name}.js: ${entry.source} does not exist\n`);
    return false;
  });

  // Chunk names carry content hashes; old ones would pile up.
  await rm(join(outdir, 'chunks'), { recursive: true, force: true });
  const { errors } = await bundle({ entries, outdir });
  if (errors > 0) return 1;
  for (const entry of entries) process.stdout.write(`build: ${relative(ROOT, join(outdir, `${entry.name}.js`))} ← ${entry.source}\n`);
  return 0;
}

/**
 * Bundles `entries` into `outdir`. Every file is written beside its target and renamed
 * over it, so a process starting meanwhile loads the old bundle or the new one, never
 * half of one (caller/bin rebuilds the caller's bundle while other callers may run).
 * Without `splitting`, each entry is one file (dynamic imports inlined).
 *
 * @param {{ entries: readonly { name: string; source: string }[]; outdir: string; splitting?: boolean }} options
 * @returns {Promise<{ errors: number; inputs: string[] }>} `inputs`: the source files bundled, relative to the repository root.
 */
export async function bundle({ entries, outdir, splitting = true }) {
  await mkdir(outdir, { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: entries.map((entry) => ({ in: entry.source, out: entry.name })),
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    sourcemap: true,
    // Keeps dynamic imports lazy (auth-server/src/main.ts validates its configuration
    // before it loads oidc-provider) and shares the workspace code between entries.
    splitting,
    chunkNames: 'chunks/[name]-[hash]',
    plugins: [externalThirdParty],
    logLevel: 'warning',
    write: false,
    metafile: true,
  });
  if (result.errors.length > 0) return { errors: result.errors.length, inputs: [] };
  // The bundles are ES modules named .js: this makes them so wherever dist/ is copied.
  const files = [...result.outputFiles.map((file) => ({ path: file.path, contents: file.contents })), { path: join(outdir, 'package.json'), contents: `${JSON.stringify({ type: 'module' }, null, 2)}\n` }];
  await Promise.all(
    files.map(async (file) => {
      await mkdir(dirname(file.path), { recursive: true });
      const temporary = `${file.path}.${process.pid}.tmp`;
      await writeFile(temporary, file.contents);
      await rename(temporary, file.path);
    }),
  );
  return { errors: 0, inputs: Object.keys(result.metafile.inputs).sort() };
}

// Runs as a script (`node scripts/build.mjs`); imported (caller/bin/build.js), it only exports bundle().
const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
if (invokedDirectly) {
  main().then(
    (code) => (process.exitCode = code),
    (error) => {
      // esbuild has already printed its diagnostics; this is the one-line reason.
      process.stderr.write(`build: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
