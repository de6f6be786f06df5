import { readFile } from 'node:fs/promises';
import type { IrisRow } from '../client/predictor-client.js';
import { InputError } from './failure.js';

/** `json`, `@file` or `-` (stdin). */
export async function readInputArgument(argument: string | undefined, readStdin: () => Promise<string>): Promise<string> {
  if (argument === undefined) throw new InputError('predict needs an input: a JSON string, @file or - for stdin');
  if (argument === '-') return readStdin();
  if (argument.startsWith('@')) return readInputFile(argument.slice(1));
  return argument;
}

export async function readInputFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new InputError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** Accepts `{"inputs": rows}` or the rows alone; the predictor validates the numbers. */
export function parseInputs(value: unknown): IrisRow[] {
  const rows = Array.isArray(value) ? value : (value as { inputs?: unknown } | null)?.inputs;
  if (!Array.isArray(rows)) throw new InputError('the input must be {"inputs": [[f1,f2,f3,f4], ...]} or an array of rows');
  return rows as IrisRow[];
}

export function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new InputError(`${where} is not valid JSON`);
  }
}

export interface BatchLine {
  /** 1-based line number in the file. */
  line: number;
  inputs: IrisRow[];
  /** From the line's `idempotency_key`, so a re-run batch is not executed twice. */
  idempotencyKey: string | undefined;
}

/** One logical prediction per non-empty line: `{"inputs": …, "idempotency_key"?: …}` or an array of rows. */
export function parseBatch(text: string): BatchLine[] {
  return text.split('\n').flatMap((raw, index) => {
    if (raw.trim() === '') return [];
    const value = parseJson(raw, `line ${index + 1}`);
    const key = (value as { idempotency_key?: unknown } | null)?.idempotency_key;
    if (key !== undefined && typeof key !== 'string') throw new InputError(`line ${index + 1}: idempotency_key must be a string`);
    return [{ line: index + 1, inputs: parseInputs(value), idempotencyKey: key }];
  });
}
