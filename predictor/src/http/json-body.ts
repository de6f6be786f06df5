import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { MalformedJson, PayloadTooLarge, UnsupportedMediaType } from './problems.js';

const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/**
 * Reads a JSON body within `limitBytes`: 415 for another media type, 413 over the limit
 * (a declared Content-Length at once, a chunked body as soon as it passes the limit),
 * 400 for malformed JSON.
 *
 * Written by hand rather than with hono's bodyLimit: that middleware reads the body as
 * a web stream, which makes @hono/node-server build a full Request per call (measured:
 * most of the predictor's per-request cost). On Node this reads the IncomingMessage.
 */
export async function readJsonBody(c: Context, limitBytes: number): Promise<unknown> {
  if (!JSON_MEDIA_TYPE.test(c.req.header('content-type') ?? '')) throw new UnsupportedMediaType();
  const declared = Number(c.req.header('content-length'));
  if (declared > limitBytes) throw tooLarge(c, limitBytes);
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const source: AsyncIterable<Uint8Array> = incoming ?? (c.req.raw.body as AsyncIterable<Uint8Array> | null) ?? (async function* () {})();
  for await (const chunk of source) {
    size += chunk.byteLength;
    if (size > limitBytes) throw tooLarge(c, limitBytes);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks, size).toString('utf8'));
  } catch {
    throw new MalformedJson();
  }
}

function tooLarge(c: Context, limitBytes: number): PayloadTooLarge {
  // The rest of the body is not read: the connection cannot be reused.
  c.header('connection', 'close');
  return new PayloadTooLarge(limitBytes);
}
