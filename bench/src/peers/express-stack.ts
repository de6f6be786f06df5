import express from 'express';
import { auth, requiredScopes } from 'express-oauth2-jwt-bearer';
import { rateLimit } from 'express-rate-limit';
import { loadIrisModel } from '../../../predictor/src/model/index.js';

// Configuration C: what a typical Node user would pick instead: Express with
// express-oauth2-jwt-bearer (JWT via JWKS, issuer, audience, scope) and
// express-rate-limit keyed by client, checking the same claims as the predictor.
const model = loadIrisModel();
const app = express();
app.post(
  '/v1/predict',
  auth({ issuerBaseURL: process.env['ISSUER']!, audience: process.env['PREDICTOR_AUDIENCE']!, tokenSigningAlg: 'ES256' }),
  requiredScopes('predict'),
  rateLimit({ windowMs: 1_000, limit: 1_000_000_000, keyGenerator: (req) => String(req.auth?.payload['client_id']), standardHeaders: 'draft-7', validate: false }),
  express.json({ limit: '64kb' }),
  (req, res) => {
    const { inputs } = req.body as { inputs: [number, number, number, number][] };
    res.json({ id: crypto.randomUUID(), model: model.id, created: Math.floor(Date.now() / 1000), predictions: model.predict(inputs) });
  },
);
// A JSON error instead of Express's default handler, which prints every 401 to stderr.
app.use((error: { status?: number; code?: string }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
  res.status(error.status ?? 500).json({ error: error.code ?? 'error' });
});
const port = Number(process.env['BENCH_PORT']);
app.listen(port, () => process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`));
