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
});
