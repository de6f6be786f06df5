import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { z } from 'zod';
import { buildApp, type PredictorDeps } from '../app.js';
import type { ApiKeyVerifier } from '../auth/api-keys.js';
import type { DpopProofVerifier } from '../auth/dpop/proof.js';
import { createTokenVerifier } from '../auth/token-verifier.js';
import { PredictRequestSchema } from '../predict/request-schema.js';
import { testDeps } from '../testing/test-app.js';
import { createTestIssuer, TEST_AUDIENCE, TEST_ISSUER } from '../testing/test-issuer.js';

type Json = Record<string, any>;

const refusingDpop: DpopProofVerifier = async () => {
  throw new Error('not in this test');
};
const refusingApiKeys = (async () => {
  throw new Error('not in this test');
}) as unknown as ApiKeyVerifier;

describe('the OpenAPI document and the reference page', () => {
  let verifyToken: PredictorDeps['verifyToken'];
  before(async () => {
    const issuer = await createTestIssuer();
    verifyToken = createTokenVerifier({ issuer: TEST_ISSUER, audience: TEST_AUDIENCE, algorithms: ['ES256'], clockToleranceSeconds: 5, getKey: issuer.getKey });
  });

  /** The app as main.ts builds it: every optional route and scheme on. */
  const fullApp = (overrides: Partial<PredictorDeps> = {}) =>
    buildApp(
      testDeps({
        verifyToken,
        verifyApiKey: refusingApiKeys,
        dpop: { verifyProof: refusingDpop, algorithms: ['ES256', 'EdDSA'] },
        protectedResource: { resource: TEST_AUDIENCE, publicUrl: TEST_AUDIENCE, authorizationServers: [TEST_ISSUER], scopes: ['predict', 'models:read'] },
        apiDocs: { issuer: 'https://issuer.example/tenant/' },
        ...overrides,
      }),
    );
  const documentOf = async (app: ReturnType<typeof buildApp>) => {
    const response = await app.request('/openapi.json');
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json');
    return (await response.json()) as Json;
  };

  it('documents every route of the app, with each method it answers (the page assets excepted)', async () => {
    const app = fullApp();
    const document = await documentOf(app);
    const routed = new Set(
      app.routes.filter((route) => route.method !== 'ALL' && route.path !== '/docs/assets/:file').map((route) => `${route.method} ${route.path}`),
    );
    const documented = new Set(Object.entries(document['paths'] as Json).flatMap(([path, item]) => Object.keys(item as Json).map((method) => `${method.toUpperCase()} ${path}`)));
    assert.deepEqual([...documented].sort(), [...routed].sort());
    assert.ok(documented.has('POST /v1/predict') && documented.has('GET /openapi.json') && documented.has('GET /docs') && documented.has('GET /.well-known/oauth-protected-resource'));
  });

  it('is not served without apiDocs, and adds no route then', async () => {
    const app = buildApp(testDeps({ verifyToken }));
    assert.equal((await app.request('/openapi.json')).status, 404);
    assert.equal((await app.request('/docs')).status, 404);
  });

  it('derives the client-credentials token URL from the issuer and offers the schemes the app accepts', async () => {
    const schemes = (await documentOf(fullApp()))['components']['securitySchemes'] as Json;
    assert.equal(schemes['oauth2'].flows.clientCredentials.tokenUrl, 'https://issuer.example/tenant/token');
    assert.deepEqual(Object.keys(schemes['oauth2'].flows.clientCredentials.scopes).sort(), ['models:read', 'predict']);
    assert.deepEqual({ type: schemes['apiKey'].type, in: schemes['apiKey'].in, name: schemes['apiKey'].name }, { type: 'apiKey', in: 'header', name: 'X-API-Key' });
    assert.deepEqual({ type: schemes['dpop'].type, scheme: schemes['dpop'].scheme }, { type: 'http', scheme: 'DPoP' });
    assert.match(schemes['dpop'].description, /ES256, EdDSA/);

    const bearerOnly = await documentOf(fullApp({ verifyApiKey: undefined, dpop: undefined }));
    assert.deepEqual(Object.keys(bearerOnly['components']['securitySchemes']), ['oauth2']);
    assert.deepEqual(bearerOnly['paths']['/v1/predict'].post.security, [{ oauth2: ['predict'] }]);
  });

  it('requires the route scope through every scheme, and leaves the public routes open', async () => {
    const paths = (await documentOf(fullApp()))['paths'] as Json;
    assert.deepEqual(paths['/v1/predict'].post.security, [{ oauth2: ['predict'] }, { dpop: ['predict'] }, { apiKey: ['predict'] }]);
    assert.deepEqual(paths['/v1/models'].get.security, [{ oauth2: ['models:read'] }, { dpop: ['models:read'] }, { apiKey: ['models:read'] }]);
    for (const path of ['/healthz', '/readyz', '/openapi.json', '/docs', '/.well-known/oauth-protected-resource']) assert.equal(paths[path].get.security, undefined, path);
  });

  it('describes the predict body with the zod schema the route validates with', async () => {
    const document = await documentOf(fullApp());
    const body = document['paths']['/v1/predict'].post.requestBody;
    assert.equal(body.required, true);
    assert.deepEqual(body.content['application/json'].schema, { $ref: '#/components/schemas/PredictRequest' });
    const { $schema, ref, ...fromZod } = z.toJSONSchema(PredictRequestSchema, { io: 'input' }) as Json;
    assert.deepEqual(document['components']['schemas']['PredictRequest'], fromZod);
  });

  it('lists every status each route answers, problems as application/problem+json', async () => {
    const paths = (await documentOf(fullApp()))['paths'] as Json;
    const statuses = (operation: Json) => Object.keys(operation['responses']).sort();
    assert.deepEqual(statuses(paths['/v1/predict'].post), ['200', '400', '401', '403', '409', '413', '415', '422', '429', '500', '503']);
    assert.deepEqual(statuses(paths['/v1/models'].get), ['200', '400', '401', '403', '429', '500', '503']);
    assert.deepEqual(statuses(paths['/readyz'].get), ['200', '500', '503']);
    for (const status of ['400', '401', '403', '409', '413', '415', '422', '429', '503']) {
      assert.deepEqual(Object.keys(paths['/v1/predict'].post.responses[status].content), ['application/problem+json'], status);
    }
    assert.deepEqual(paths['/v1/predict'].post.responses['422'].content['application/problem+json'].schema, { $ref: '#/components/schemas/ValidationProblem' });
  });

  it('documents the rate-limit and idempotency headers', async () => {
    const document = await documentOf(fullApp());
    const predict = document['paths']['/v1/predict'].post;
    const headerNames = (status: string) => Object.keys(predict.responses[status].headers).sort();
    assert.deepEqual(headerNames('429'), ['RateLimit', 'RateLimit-Policy', 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'X-Request-Id']);
    assert.ok(headerNames('200').includes('Idempotent-Replayed'));
    assert.ok(headerNames('409').includes('Retry-After'));
    assert.ok(headerNames('401').includes('WWW-Authenticate') && headerNames('401').includes('DPoP-Nonce'));
    assert.deepEqual(predict.parameters, [{ $ref: '#/components/parameters/Idempotency-Key' }, { $ref: '#/components/parameters/X-Request-Id' }]);
    const key = document['components']['parameters']['Idempotency-Key'];
    assert.deepEqual({ in: key.in, required: key.required, maxLength: key.schema.maxLength }, { in: 'header', required: false, maxLength: 255 });
    const required = await documentOf(fullApp({ requireIdempotencyKey: true }));
    assert.equal(required['components']['parameters']['Idempotency-Key'].required, true);
  });

  it('serves /docs with every file it loads from the app itself, under a policy that allows no other origin but the token endpoint', async () => {
    const app = fullApp();
    const page = await app.request('/docs');
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    const policy = page.headers.get('content-security-policy') ?? '';
    assert.match(policy, /default-src 'none'/);
    assert.match(policy, /script-src 'self';/);
    assert.match(policy, /connect-src 'self' https:\/\/issuer\.example;/);
    const html = await page.text();
    const loaded = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!);
    assert.ok(loaded.length >= 4, html);
    for (const reference of loaded) {
      const url = new URL(reference, 'http://predictor.test/docs');
      assert.equal(url.origin, 'http://predictor.test', reference);
      const asset = await app.request(url.pathname);
      assert.equal(asset.status, 200, reference);
      assert.ok((await asset.arrayBuffer()).byteLength > 0, reference);
    }
    const script = await (await app.request('/docs/assets/init.js')).text();
    assert.match(script, /url: new URL\("openapi\.json", document\.baseURI\)/);
    assert.match(script, /validatorUrl: null/);
  });

  it('serves only the listed assets: anything else under /docs/assets is a 404 problem', async () => {
    const app = fullApp();
    for (const path of ['/docs/assets/package.json', '/docs/assets/index.html', '/docs/assets/..%2Fpackage.json']) {
      const response = await app.request(path);
      assert.equal(response.status, 404, path);
      assert.equal(response.headers.get('content-type'), 'application/problem+json');
    }
  });
});
