import type { Context } from 'hono';
import { MalformedJson, UnsupportedMediaType } from './problems.js';

const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/** Reads a JSON body: 415 for another media type, 400 for malformed JSON. */
export async function readJsonBody(c: Context): Promise<unknown> {
  if (!JSON_MEDIA_TYPE.test(c.req.header('content-type') ?? '')) throw new UnsupportedMediaType();
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new MalformedJson();
  }
}
