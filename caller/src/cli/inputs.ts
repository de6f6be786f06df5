import { readFile } from 'node:fs/promises';
import { ConfigError } from '@m2m/common';
import type { IrisRow } from '../client/predictor-client.js';
import { InputError } from './failure.js';

/** What `predict` and every line of `batch` accept. */
export const INPUT_SHAPE = '{"inputs": [[f1,f2,f3,f4], ...]} or just the rows [[f1,f2,f3,f4], ...]';

/** `json`, `@file` or `-` (stdin). */
export async function readInputArgument(argument: string | undefined, readStdin: () => Promise<string>): Promise<{ text: string; source: string }> {
  if (argument === undefined) throw new ConfigError('predict needs an input: a JSON string, @file or - for stdin (caller predict --help)');
  if (argument === '-') return { text: await readStdin(), source: 'stdin' };
  if (argument.startsWith('@')) return { text: await readInputFile(argument.slice(1)), source: argument.slice(1) };
  return { text: argument, source: 'the input' };
}

/** A file that cannot be read is a usage error (exit 2), not an invalid request. */
export async function readInputFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (code ?? (error as Error).message);
    throw new ConfigError(`cannot read ${path}: ${reason}`);
  }
}

/** Accepts `{"inputs": rows}` or the rows alone; the predictor validates the numbers. */
export function parseInputs(value: unknown, where = 'the input'): IrisRow[] {
  const rows = Array.isArray(value) ? value : (value as { inputs?: unknown } | null)?.inputs;
  if (!Array.isArray(rows)) throw new InputError(`${where}: expected ${INPUT_SHAPE}, got ${describeValue(value)}`);
  return rows as IrisRow[];
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return `a ${typeof value}`;
  const inputs = (value as { inputs?: unknown }).inputs;
  if (inputs === undefined) return `an object without "inputs" (keys: ${Object.keys(value).slice(0, 5).join(', ') || 'none'})`;
  return `"inputs" as ${describeValue(inputs)}`;
}

/**
 * JSON.parse with an error that says where (`rows.jsonl:3:14`, or line and column of
 * the input) and what was expected instead.
 */
export function parseJson(text: string, where: string, options: { lineOffset?: number } = {}): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = (error as Error).message;
    const reported = / at position (\d+)/.exec(message)?.[1];
    const offset = reported === undefined ? jsonErrorOffset(text) : Number(reported);
    const before = text.slice(0, offset).split('\n');
    const line = before.length + (options.lineOffset ?? 0);
    const column = before.at(-1)!.length + 1;
    // V8 echoes the whole text ("…" is not valid JSON): the position says enough.
    const reason = message.replace(/, (\.\.\.)?".*" is not valid JSON$/s, '').replace(/ (in JSON )?at position \d+.*$/s, '');
    throw new InputError(`${where}: not valid JSON at line ${line}, column ${column} (${reason}); expected ${INPUT_SHAPE}`);
  }
}

/**
 * Offset of the first character that breaks the JSON grammar (RFC 8259), for the V8
 * messages that name the token but not its position.
 */
export function jsonErrorOffset(text: string): number {
  let at = 0;
  const fail = (): never => {
    throw at;
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at]!)) at += 1;
  };
  const literal = (word: string) => {
    for (const char of word) if (text[at++] !== char) (at -= 1), fail();
  };
  const string = () => {
    at += 1;
    while (at < text.length && text[at] !== '"') {
      if (text.charCodeAt(at) < 0x20) fail();
      if (text[at] === '\\') {
        at += 1;
        if (text[at] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(at + 1, at + 5))) (at += 1), fail();
          at += 4;
        } else if (!'"\\/bfnrt'.includes(text[at] ?? 'x')) fail();
      }
      at += 1;
    }
    if (at >= text.length) fail();
    at += 1;
  };
  const number = () => {
    const match = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(at));
    if (!match || match[0] === '-') fail();
    at += match![0].length;
  };
  const value = (): void => {
    space();
    const char = text[at];
    if (char === '{') {
      at += 1;
      space();
      if (text[at] === '}') return void (at += 1);
      for (;;) {
        space();
        if (text[at] !== '"') fail();
        string();
        space();
        if (text[at] !== ':') fail();
        at += 1;
        value();
        space();
        if (text[at] === ',') at += 1;
        else if (text[at] === '}') return void (at += 1);
        else fail();
      }
    }
    if (char === '[') {
      at += 1;
      space();
      if (text[at] === ']') return void (at += 1);
      for (;;) {
        value();
        space();
        if (text[at] === ',') at += 1;
        else if (text[at] === ']') return void (at += 1);
        else fail();
      }
    }
    if (char === '"') return string();
    if (char === 't') return literal('true');
    if (char === 'f') return literal('false');
    if (char === 'n') return literal('null');
    if (char === '-' || (char !== undefined && char >= '0' && char <= '9')) return number();
    fail();
  };
  try {
    value();
    space();
    return at < text.length ? at : text.length;
  } catch (offset) {
    return Math.min(offset as number, text.length);
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
export function parseBatch(text: string, file = 'the batch file'): BatchLine[] {
  return text.split('\n').flatMap((raw, index) => {
    if (raw.trim() === '') return [];
    const where = `${file} line ${index + 1}`;
    const value = parseJson(raw, file, { lineOffset: index });
    const key = (value as { idempotency_key?: unknown } | null)?.idempotency_key;
    if (key !== undefined && typeof key !== 'string') throw new InputError(`${where}: idempotency_key must be a string, got ${describeValue(key)}`);
    return [{ line: index + 1, inputs: parseInputs(value, where), idempotencyKey: key }];
  });
}
