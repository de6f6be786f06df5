/** One measured load of one configuration. */
export interface Sample {
  rps: number;
  /** The server process's CPU time (user + system) per request, in µs: far steadier than req/s on a shared VM. */
  cpuMicros: number;
  p50: number;
  p99: number;
  requests: number;
  /** Answers with any status but 200 (a 201 or a 204 is not the answer measured either). */
  non200: number;
  errors: number;
}

export interface ConfigurationSummary {
  name: string;
  rps: { median: number; min: number; max: number };
  p50: number;
  p99: number;
  cpuMicrosPerRequest: number;
  /** Every request of every round answered 200 and there were some: only then is req/s a throughput. */
  allOk: boolean;
}

export function median(values: number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const twoDecimals = (value: number) => Math.round(value * 100) / 100;

/** A 401 storm, refused connections or a load that never ran are not a throughput. */
export function answeredOnly200(sample: Pick<Sample, 'requests' | 'non200' | 'errors'>): boolean {
  return sample.requests > 0 && sample.non200 === 0 && sample.errors === 0;
}

/** Medians over the rounds, with the spread of req/s. */
export function summarise(name: string, samples: Sample[]): ConfigurationSummary {
  const rps = samples.map((sample) => sample.rps);
  return {
    name,
    rps: { median: Math.round(median(rps)), min: Math.round(Math.min(...rps)), max: Math.round(Math.max(...rps)) },
    p50: median(samples.map((sample) => sample.p50)),
    p99: median(samples.map((sample) => sample.p99)),
    cpuMicrosPerRequest: Math.round(median(samples.map((sample) => sample.cpuMicros))),
    allOk: samples.every(answeredOnly200),
  };
}

/**
 * req/s of `numerator` over `denominator` round by round, then the median, to two decimals: both
 * ran in the same round, so a round in which the machine was slow for everyone cancels out.
 */
export function roundByRoundRatio(numerator: Sample[], denominator: Sample[]): number {
  if (numerator.length !== denominator.length) throw new RangeError('a ratio needs the same rounds on both sides');
  return twoDecimals(median(numerator.map((sample, index) => sample.rps / denominator[index]!.rps)));
}

/** One server's answers at a fixed request rate: latencies in ms of the 200s, and the rest. */
export interface LatencyAtRate {
  p50: number;
  p99: number;
  ok: number;
  failed: number;
}

/** One round of the same fixed request rate offered to A and to B. */
export interface SameLoadRound {
  a: LatencyAtRate;
  b: LatencyAtRate;
}

export interface SameLoadSummary {
  /** Requests per second offered to both. */
  rate: number;
  a: { p50: number; p99: number };
  b: { p50: number; p99: number };
  /** B's p99 over A's, round by round, median. */
  p99Ratio: number;
  allOk: boolean;
}

/** Latency in ms at the same offered load, medians over the rounds (two decimals). */
export function summariseSameLoad(rate: number, rounds: SameLoadRound[]): SameLoadSummary {
  if (rounds.length === 0) throw new RangeError('no rounds at the same load');
  const side = (key: 'a' | 'b') => ({ p50: twoDecimals(median(rounds.map((round) => round[key].p50))), p99: twoDecimals(median(rounds.map((round) => round[key].p99))) });
  return {
    rate,
    a: side('a'),
    b: side('b'),
    p99Ratio: twoDecimals(median(rounds.map((round) => round.b.p99 / round.a.p99))),
    allOk: rounds.every((round) => [round.a, round.b].every((side) => side.failed === 0 && side.ok > 0)),
  };
}

/** Why the run must fail (exit 1), one line each; empty when every measurement is a throughput. */
export function failedMeasurements(configurations: ConfigurationSummary[], tokenIssuance: { allOk: boolean } | undefined, sameLoad?: { allOk: boolean }): string[] {
  return [
    ...configurations.filter((row) => !row.allOk).map((row) => `${row.name} answered something other than 200: its numbers are not a throughput`),
    ...(sameLoad?.allOk === false ? ['A or B answered something other than 200 at the same load: those latencies are not of served requests'] : []),
    ...(tokenIssuance?.allOk === false ? ['the token endpoint answered something other than 200: its tokens/s is not a rate of issued tokens'] : []),
    ...(tokenIssuance === undefined ? ['the token issuance load failed'] : []),
  ];
}
