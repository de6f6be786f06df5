#!/usr/bin/env node
// The caller's compiled CLI: dist/caller.js, one ES module bundled from src/ by the
// repository's scripts/build.mjs (third-party packages stay imports). `npm install` and
// `npm ci` build it (the `prepare` script runs this file); bin/caller.js runs it.
//
// In a checkout, bin/caller.js calls freshBundle() first: if a source the bundle was made
// from (listed in dist/caller.inputs.json) changed since, it rebuilds it, once, so that an
// edited source is never run stale. Where the build script is absent (an installed copy,
// or the dependency layer of the container images, which builds dist/ later), the bundle
// is used as it is.
import { existsSync, readFileSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const REPOSITORY_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BUNDLE = fileURLToPath(new URL('../dist/caller.js', import.meta.url));
const INPUTS = fileURLToPath(new URL('../dist/caller.inputs.json', import.meta.url));
const BUILD_SCRIPT = fileURLToPath(new URL('../../scripts/build.mjs', import.meta.url));
const ENTRY = { name: 'caller', source: 'caller/src/cli/main.ts' };

/** True when every source the bundle was made from is older than the bundle. */
function isFresh() {
  try {
    const builtAt = statSync(BUNDLE).mtimeMs;
    const inputs = JSON.parse(readFileSync(INPUTS, 'utf8'));
    return inputs.length > 0 && inputs.every((input) => statSync(`${REPOSITORY_ROOT}${input}`).mtimeMs <= builtAt);
  } catch {
    return false; // no bundle, no inputs list, or a source gone: build
  }
}

/**
 * Builds dist/caller.js; returns false (and says why on stderr) when it cannot be built
 * here: no build script or no esbuild. Throws when the sources do not compile.
 */
export async function build() {
  if (!existsSync(BUILD_SCRIPT) || !existsSync(`${REPOSITORY_ROOT}${ENTRY.source}`)) {
    process.stderr.write(`caller: not building dist/caller.js here: ${existsSync(BUILD_SCRIPT) ? ENTRY.source : 'scripts/build.mjs'} is not around\n`);
    return false;
  }
  let bundle;
  try {
    ({ bundle } = await import(pathToFileURL(BUILD_SCRIPT).href));
  } catch (error) {
    process.stderr.write(`caller: not building dist/caller.js here: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}\n`);
    return false;
  }
  const { errors, inputs } = await bundle({ entries: [ENTRY], outdir: `${PACKAGE_DIR}dist`, splitting: false });
  if (errors > 0) throw new Error('the caller does not build (esbuild printed why)');
  // Written after the bundle, beside it, then renamed: a reader sees a complete list.
  writeFileSync(`${INPUTS}.${process.pid}.tmp`, `${JSON.stringify(inputs)}\n`);
  renameSync(`${INPUTS}.${process.pid}.tmp`, INPUTS);
  return true;
}

/** The URL of a bundle that matches the sources, building it first in a checkout when needed. */
export async function freshBundle() {
  if (existsSync(BUILD_SCRIPT) && !isFresh()) {
    process.stderr.write(`caller: ${existsSync(BUNDLE) ? 'sources changed since dist/caller.js was built' : 'dist/caller.js is not built yet'}; building it\n`);
    try {
      await build();
    } catch (error) {
      process.stderr.write(`caller: ${error.message}\n`);
      process.exit(1);
    }
  }
  if (!existsSync(BUNDLE)) {
    process.stderr.write('caller: dist/caller.js is missing; build it with `npm run build -w caller` (npm install runs it as the prepare step)\n');
    process.exit(2);
  }
  return pathToFileURL(BUNDLE).href;
}

// `node bin/build.js` (the prepare and build scripts): build, or skip where it cannot be built.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  build().then(
    (built) => built && process.stdout.write(`build: caller/dist/caller.js ← ${ENTRY.source}\n`),
    (error) => {
      process.stderr.write(`caller: ${error.message}\n`);
      process.exitCode = 1;
    },
  );
}
