import assert from 'node:assert/strict';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import type { Context } from 'hono';
import { readJsonBody } from './json-body.js';
import { IncompleteBody, MalformedJson, PayloadTooLarge } from './problems.js';

/** What readJsonBody uses of a Hono context on @hono/node-server: the headers, the Node request, c.header. */
function contextOver(incoming: IncomingMessage, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  const set: Record<string, string> = {};
  const c = { req: { header: (name: string) => headers[name] }, env: { incoming }, header: (name: string, value: string) => (set[name] = value) };
  return { c: c as unknown as Context, set };
}

function incomingWith(...chunks: string[]): IncomingMessage {
  const incoming = new IncomingMessage(new Socket());
  for (const chunk of chunks) incoming.push(Buffer.from(chunk));
  incoming.push(null);
  return incoming;
}

describe('readJsonBody on a Node request', () => {
  it('parses a body that arrives in several chunks', async () => {
    const { c } = contextOver(incomingWith('{"inputs":', '[[1,2,3,4]]}'));
    assert.deepEqual(await readJsonBody(c, 1024), { inputs: [[1, 2, 3, 4]] });
  });

  it('reads a stream someone paused', async () => {
    const incoming = incomingWith('{"a":1}');
    incoming.pause();
    assert.deepEqual(await readJsonBody(contextOver(incoming).c, 1024), { a: 1 });
  });

  it('answers 413 once a body without Content-Length passes the limit, and closes the connection', async () => {
    const { c, set } = contextOver(incomingWith('{"inputs":', '"x'.repeat(100), '"}'));
    await assert.rejects(readJsonBody(c, 64), PayloadTooLarge);
    assert.equal(set['connection'], 'close');
  });

  it('answers 400 for malformed JSON', async () => {
    await assert.rejects(readJsonBody(contextOver(incomingWith('{"inputs": [')).c, 1024), MalformedJson);
  });

  it('settles at once when the client went away before the body was read', async () => {
    const incoming = new IncomingMessage(new Socket());
    incoming.push(Buffer.from('{"inputs":'));
    incoming.destroy();
    await assert.rejects(readJsonBody(contextOver(incoming).c, 1024), IncompleteBody);
  });

  it('settles when the connection closes in the middle of the body', async () => {
    const incoming = new IncomingMessage(new Socket());
    incoming.push(Buffer.from('{"inputs":'));
    const reading = readJsonBody(contextOver(incoming).c, 1024);
    incoming.destroy();
    await assert.rejects(reading, IncompleteBody);
  });

  it('settles when the stream fails', async () => {
    const incoming = new IncomingMessage(new Socket());
    const reading = readJsonBody(contextOver(incoming).c, 1024);
    incoming.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    await assert.rejects(reading, IncompleteBody);
  });
});
