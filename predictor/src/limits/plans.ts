import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** The limits of one client plan: a token bucket and a daily quota. */
export interface Plan {
  name: string;
  /** Bucket capacity (in requests): how many requests may arrive at once. Integer >= 1. */
  burst: number;
  /** Sustained rate (in requests per second) at which the bucket refills, continuously. */
  refillPerSecond: number;
  /** Requests per UTC day. Integer >= 1. */
  dailyQuota: number;
}

export interface PlanTable {
  plans: ReadonlyMap<string, Plan>;
  /** Given to a client whose plan is missing or unknown. */
  defaultPlan: Plan;
  /** The named plan, or `defaultPlan` when there is no such plan. */
  resolve(name: string | undefined): Plan;
}

/** The plans file is unreadable or invalid: the message is one line naming the source, plan and field. */
export class PlansError extends Error {
  override name = 'PlansError';
}

/** `predictor/plans.json`, the committed source of truth for plans. */
export const DEFAULT_PLANS_PATH = fileURLToPath(new URL('../../plans.json', import.meta.url));

// Largest Integer of HTTP structured fields (RFC 9651 section 3.3.1): limits and windows end up in RateLimit-Policy.
const SF_INTEGER_MAX = 999_999_999_999_999;
const PLAN_FIELDS = new Set(['burst', 'refillPerSecond', 'dailyQuota']);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Keys starting with `$` (such as `$comment`) are notes for people and are skipped. */
function fieldsOf(object: Record<string, unknown>): [string, unknown][] {
  return Object.entries(object).filter(([key]) => !key.startsWith('$'));
}

function parsePlan(name: string, json: unknown, source: string): Plan {
  // Typed explicitly so that TypeScript knows code after a call is unreachable.
  const fail: (message: string) => never = (message) => {
    throw new PlansError(`${source}: plan "${name}": ${message}`);
  };
  if (!isObject(json)) return fail('must be an object with burst, refillPerSecond and dailyQuota');
  // An unknown field is most likely a misspelt limit that would otherwise be silently missing.
  const unknown = fieldsOf(json).find(([key]) => !PLAN_FIELDS.has(key));
  if (unknown) fail(`unknown field "${unknown[0]}" (expected burst, refillPerSecond, dailyQuota)`);

  const count = (field: 'burst' | 'dailyQuota'): number => {
    const value = json[field];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
      fail(`${field} must be an integer >= 1, got ${JSON.stringify(value) ?? 'nothing'}`);
    }
    if (value > SF_INTEGER_MAX) fail(`${field} must be at most ${SF_INTEGER_MAX}, got ${value}`);
    return value;
  };
  const burst = count('burst');
  const dailyQuota = count('dailyQuota');
  const refillPerSecond = json.refillPerSecond;
  if (typeof refillPerSecond !== 'number' || !Number.isFinite(refillPerSecond) || refillPerSecond <= 0) {
    fail(`refillPerSecond must be a positive finite number, got ${JSON.stringify(refillPerSecond) ?? 'nothing'}`);
  }
  if (!(Math.ceil(burst / refillPerSecond) <= SF_INTEGER_MAX)) fail(`refillPerSecond ${refillPerSecond} is too small to refill a burst of ${burst}`);
  return Object.freeze({ name, burst, refillPerSecond, dailyQuota });
}

/** Validates the content of a plans file; `source` (a path) prefixes every error message. */
export function parsePlans(json: unknown, source: string): PlanTable {
  if (!isObject(json) || !isObject(json.plans)) {
    throw new PlansError(`${source}: expected {"plans": {name: {burst, refillPerSecond, dailyQuota}}, "defaultPlan": name}`);
  }
  const entries = fieldsOf(json.plans);
  if (entries.length === 0) throw new PlansError(`${source}: plans must name at least one plan`);
  const plans = new Map(entries.map(([name, plan]) => [name, parsePlan(name, plan, source)] as const));

  const defaultName = json.defaultPlan;
  const defaultPlan = typeof defaultName === 'string' ? plans.get(defaultName) : undefined;
  if (!defaultPlan) {
    throw new PlansError(`${source}: defaultPlan must name one of the plans (${[...plans.keys()].join(', ')}), got ${JSON.stringify(defaultName) ?? 'nothing'}`);
  }
  return {
    plans,
    defaultPlan,
    resolve: (name) => (name === undefined ? undefined : plans.get(name)) ?? defaultPlan,
  };
}

export async function loadPlansFile(path: string): Promise<PlanTable> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new PlansError(`${path}: cannot read the plans file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new PlansError(`${path}: not valid JSON (${(error as Error).message.split('\n')[0]})`);
  }
  return parsePlans(json, path);
}
