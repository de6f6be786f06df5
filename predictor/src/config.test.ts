import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '@m2m/common';
import { loadPredictorConfig } from './config.js';

describe('predictor configuration', () => {
  it('puts GET /metrics on a loopback listener of its own by default (9464), apart from the API port', () => {
    const config = loadPredictorConfig({});
    assert.equal(config.metricsPort, 9464);
    assert.equal(config.metricsHost, '127.0.0.1');
    assert.notEqual(config.metricsPort, config.port);
    assert.deepEqual(
      (({ metricsPort, metricsHost }) => ({ metricsPort, metricsHost }))(loadPredictorConfig({ METRICS_PORT: '0', METRICS_HOST: '0.0.0.0' })),
      { metricsPort: 0, metricsHost: '0.0.0.0' },
    );
    assert.throws(() => loadPredictorConfig({ METRICS_PORT: '70000' }), ConfigError);
  });

  it('checks DPoP proofs against PREDICTOR_PUBLIC_URL (default: the audience), with asymmetric algs only and a long nonce secret', () => {
    const defaults = loadPredictorConfig({ PREDICTOR_AUDIENCE: 'https://predictor.example' });
    assert.equal(defaults.publicUrl, 'https://predictor.example');
    assert.deepEqual(defaults.dpopAlgorithms, ['ES256', 'EdDSA', 'Ed25519', 'PS256']);
    assert.equal(defaults.dpopProofMaxAgeSeconds, 60);
    assert.equal(defaults.dpopNonceSecret, undefined);
    assert.equal(defaults.dpopReplayOnStoreFailure, 'fail-closed');
    assert.equal(loadPredictorConfig({ PREDICTOR_PUBLIC_URL: 'https://api.example/ml/' }).publicUrl, 'https://api.example/ml');
    assert.throws(() => loadPredictorConfig({ PREDICTOR_PUBLIC_URL: 'https://api.example/?x=1' }), /PREDICTOR_PUBLIC_URL must not have a query/);
    assert.throws(() => loadPredictorConfig({ DPOP_ALGORITHMS: 'ES256,HS256' }), /DPOP_ALGORITHMS may list only asymmetric algorithms/);
    assert.throws(() => loadPredictorConfig({ DPOP_NONCE_SECRET: 'short' }), /DPOP_NONCE_SECRET must be at least 32 characters/);
  });
});
