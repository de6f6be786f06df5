// Reads a V8 `.cpuprofile` (what `node --cpu-prof` writes) into the shares docs/benchmark.md quotes.
// Written by hand: DevTools shows one profile well but cannot group it by concern or print
// it in a terminal, and the format is a plain tree of call frames with sample counts.

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /**
   * Sampled time spent serving, in ms: idle time and start-up (module loading) left out. The
   * sampler measures wall time, so time spent waiting for a core counts too: use the shares.
   */
  busyMs: number;
  /** Self time by concern, largest first, as shares of `busyMs`. */
  concerns: { concern: string; share: number }[];
  /** The functions with the most self time. */
  hottest: { fn: string; where: string; share: number }[];
}

type Frame = CpuProfile['nodes'][number]['callFrame'];

/** First match wins; the order puts the specific before the general. */
const concernsFor = (isApplication: (url: string) => boolean): [string, (frame: Frame) => boolean][] => [
  ['idle', (f) => f.functionName === '(idle)'],
  ['start-up', (f) => /node:internal\/modules\/|cjs-module-lexer/.test(f.url) || f.functionName === 'compileSourceTextModule'],
  ['socket writes (kernel)', (f) => f.functionName === 'writev' || f.functionName === 'writeUtf8String' || f.functionName === 'writeBuffer'],
  ['request log (pino)', (f) => /node_modules\/(pino|sonic-boom|@pinojs|safe-stable-stringify|quick-format-unescaped|on-exit-leak-free)\//.test(f.url)],
  ['metrics (prom-client)', (f) => f.url.includes('node_modules/prom-client/')],
  ['validation (zod)', (f) => f.url.includes('node_modules/zod/')],
  ['web Headers (undici)', (f) => f.url.includes('internal/deps/undici')],
  ['Hono and its Node adapter', (f) => /node_modules\/(hono|@hono\/node-server)\//.test(f.url)],
  ['Node HTTP, streams and sockets', (f) => f.url.startsWith('node:')],
  ['garbage collection', (f) => f.functionName === '(garbage collector)'],
  ['the application\'s own code (its bundle and chunks)', (f) => isApplication(f.url)],
  ['other (V8, microtasks, natives)', () => true],
];

/** `isApplication` tells the server's own code (its bundle) from the libraries it calls. */
export function summariseCpuProfile(profile: CpuProfile, isApplication: (url: string) => boolean, top = 12): ProfileSummary {
  const concerns = concernsFor(isApplication);
  const nodes = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const selfMicros = new Map<number, number>();
  // timeDeltas[i] is the time before sample i, so sample i lasts until the next one.
  profile.samples.forEach((id, index) => selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index + 1] ?? 0)));

  const byConcern = new Map<string, number>();
  const byFunction = new Map<string, { fn: string; where: string; micros: number }>();
  for (const [id, micros] of selfMicros) {
    const frame = nodes.get(id)!;
    const concern = concerns.find(([, matches]) => matches(frame))![0];
    byConcern.set(concern, (byConcern.get(concern) ?? 0) + micros);
    if (concern === 'idle' || concern === 'start-up') continue;
    const where = `${frame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\//, '')}:${frame.lineNumber + 1}`;
    const key = `${frame.functionName} ${where}`;
    const entry = byFunction.get(key) ?? { fn: frame.functionName || '(anonymous)', where, micros: 0 };
    entry.micros += micros;
    byFunction.set(key, entry);
  }
  const busy = [...byConcern].reduce((sum, [concern, micros]) => (concern === 'idle' || concern === 'start-up' ? sum : sum + micros), 0);
  const share = (micros: number) => Math.round((micros / Math.max(1, busy)) * 1000) / 10;
  return {
    busyMs: Math.round(busy / 1000),
    concerns: [...byConcern]
      .filter(([concern]) => concern !== 'idle' && concern !== 'start-up')
      .sort((a, b) => b[1] - a[1])
      .map(([concern, micros]) => ({ concern, share: share(micros) })),
    hottest: [...byFunction.values()]
      .sort((a, b) => b.micros - a.micros)
      .slice(0, top)
      .map(({ fn, where, micros }) => ({ fn, where, share: share(micros) })),
  };
}
