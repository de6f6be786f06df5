import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { IncompleteBody, MalformedJson, PayloadTooLarge, UnsupportedMediaType } from './problems.js';

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
  const body = incoming ? await readIncoming(incoming, limitBytes) : await readWebStream(c.req.raw.body, limitBytes);
  if (body === TOO_LARGE) throw tooLarge(c, limitBytes);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new MalformedJson();
  }
}

const TOO_LARGE = Symbol('too large');

/**
 * With listeners rather than an async iterator, which costs a promise per chunk and a stream
 * wrapper per request. A stream that ended, failed or closed before this runs (the client
 * gave up while the token was being checked) settles at once instead of waiting forever.
 */
function readIncoming(incoming: IncomingMessage, limitBytes: number): Promise<Buffer | typeof TOO_LARGE> {
  if (incoming.readableEnded) return Promise.resolve(Buffer.alloc(0));
  if (incoming.readableDidRead || incoming.errored || incoming.destroyed) return Promise.reject(new IncompleteBody());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = () => {
      incoming.off('data', onData).off('end', onEnd).off('error', onIncomplete).off('close', onIncomplete);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size <= limitBytes) return void chunks.push(chunk);
      settle();
      incoming.pause(); // the rest is never read; the response closes the connection
      resolve(TOO_LARGE);
    };
    const onEnd = () => (settle(), resolve(Buffer.concat(chunks, size)));
    // 'close' after 'end' never gets here: 'end' removed this listener.
    const onIncomplete = () => (settle(), reject(new IncompleteBody()));
    incoming.on('data', onData).once('end', onEnd).once('error', onIncomplete).once('close', onIncomplete);
    incoming.resume(); // a 'data' listener does not restart a stream someone paused
  });
}

/** Outside Node (tests through `app.request`): the web stream of the Request. */
async function readWebStream(stream: ReadableStream<Uint8Array> | null, limitBytes: number): Promise<Buffer | typeof TOO_LARGE> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of (stream ?? []) as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > limitBytes) return TOO_LARGE;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function tooLarge(c: Context, limitBytes: number): PayloadTooLarge {
  // The rest of the body is not read: the connection cannot be reused.
  c.header('connection', 'close');
  return new PayloadTooLarge(limitBytes);
}
