import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sendJson, startStubServer } from '../testing/stub-server.js';
import { TokenRequestError } from '../tokens/token-errors.js';
import { discoverAuthorizationServer, ResourceMetadataError, resourceMetadataUrl, sameResource } from './resource-metadata.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

/** A predictor serving `metadata(url)` at /.well-known/oauth-protected-resource. */
async function predictorWith(metadata: (url: string) => unknown, status = 200) {
  const stub = await startStubServer((request, _body, response) =>
    request.url === '/.well-known/oauth-protected-resource' ? sendJson(response, status, metadata(stub.url)) : sendJson(response, 404, {}),
  );
  stubs.push(stub);
  return stub;
}

describe('discoverAuthorizationServer (RFC 9728)', () => {
  it('puts the well-known path between the host and the path, and compares identifiers as parsed URLs', () => {
    assert.equal(resourceMetadataUrl('https://api.example'), 'https://api.example/.well-known/oauth-protected-resource');
    assert.equal(resourceMetadataUrl('https://api.example/v2/'), 'https://api.example/.well-known/oauth-protected-resource/v2');
    assert.equal(sameResource('HTTP://Predictor:80', 'http://predictor/'), true);
    assert.equal(sameResource('http://predictor:8080', 'http://predictor:8081'), false);
    assert.equal(sameResource('http://predictor/v1', 'http://predictor/v1/'), false);
  });

  it('takes the first authorization server from metadata whose resource is the predictor URL it was given', async () => {
    const predictor = await predictorWith((url) => ({ resource: url, authorization_servers: ['http://localhost:9000', 'http://other:9000'], scopes_supported: ['predict'] }));
    const found = await discoverAuthorizationServer({ predictorUrl: predictor.url });
    assert.deepEqual({ issuer: found.issuer, resource: found.resource, metadataUrl: found.metadataUrl }, { issuer: 'http://localhost:9000', resource: predictor.url, metadataUrl: `${predictor.url}/.well-known/oauth-protected-resource` });
  });

  it('compares with the configured audience when one is given (a predictor reached at another URL than its identifier)', async () => {
    const predictor = await predictorWith(() => ({ resource: 'http://predictor.test', authorization_servers: ['http://localhost:9000'] }));
    assert.equal((await discoverAuthorizationServer({ predictorUrl: predictor.url, expectedResource: 'http://predictor.test' })).resource, 'http://predictor.test');
  });

  it('refuses metadata for another resource, naming both URLs and the way out', async () => {
    const predictor = await predictorWith(() => ({ resource: 'https://elsewhere.example', authorization_servers: ['https://evil.example'] }));
    await assert.rejects(discoverAuthorizationServer({ predictorUrl: predictor.url }), (error: unknown) => {
      assert.ok(error instanceof ResourceMetadataError);
      assert.equal(error.code, 'resource_mismatch');
      assert.match(error.message, new RegExp(`at ${predictor.url}/\\.well-known/oauth-protected-resource is for the resource https://elsewhere\\.example, not the predictor URL ${predictor.url} `));
      assert.doesNotMatch(error.message, /evil/);
      return true;
    });
    await assert.rejects(discoverAuthorizationServer({ predictorUrl: predictor.url, expectedResource: 'http://predictor.test' }), /not the configured audience http:\/\/predictor\.test/);
  });

  it('says what is wrong with missing, broken or empty metadata, and with no answer', async () => {
    const cases: [Awaited<ReturnType<typeof predictorWith>>, string][] = [
      [await predictorWith(() => ({}), 404), 'metadata_not_found'],
      [await predictorWith(() => ({ authorization_servers: ['http://a'] })), 'invalid_metadata'],
      [await predictorWith((url) => ({ resource: url, authorization_servers: [] })), 'no_authorization_server'],
      [await predictorWith(() => ({}), 500), 'invalid_metadata'],
    ];
    for (const [predictor, code] of cases) {
      await assert.rejects(discoverAuthorizationServer({ predictorUrl: predictor.url }), (error: unknown) => error instanceof ResourceMetadataError && error.code === code && error.message.includes(predictor.url));
    }
    const gone = await predictorWith(() => ({}));
    await gone.close();
    await assert.rejects(discoverAuthorizationServer({ predictorUrl: gone.url }), (error: unknown) => error instanceof ResourceMetadataError && error.code === 'network_error');
  });

  it('refuses plain http beyond loopback: the metadata decides where the credentials go', async () => {
    await assert.rejects(discoverAuthorizationServer({ predictorUrl: 'http://predictor.example' }), (error: unknown) => error instanceof TokenRequestError && error.code === 'insecure_transport');
  });
});
