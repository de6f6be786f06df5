import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { loadIrisModel } from '../../../predictor/src/model/index.js';

// Configuration A: the same model behind a bare Hono route, no security at all: the
// upper bound of this machine for the predictor's work.
const model = loadIrisModel();
const app = new Hono();
app.get('/healthz', (c) => c.json({ status: 'ok' }));
app.post('/v1/predict', async (c) => {
  const { inputs } = (await c.req.json()) as { inputs: [number, number, number, number][] };
  return c.json({ id: crypto.randomUUID(), model: model.id, created: Math.floor(Date.now() / 1000), predictions: model.predict(inputs) });
});
const port = Number(process.env['BENCH_PORT']);
serve({ fetch: app.fetch, port }, () => process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`));
process.once('SIGTERM', () => process.exit(0)); // exits normally, so --cpu-prof can write its profile
