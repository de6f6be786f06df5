import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { machineMetadata } from './metadata.js';

describe('machineMetadata', () => {
  it('keeps the fields that are true of a client-credentials server and lists the real scopes', () => {
    const issuer = 'https://auth.example';
    const openIdProvider = {
      issuer,
      authorization_endpoint: `${issuer}/auth`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      scopes_supported: ['predict', 'models:read', 'openid'],
      response_types_supported: [],
      response_modes_supported: ['form_post', 'fragment', 'query'],
      grant_types_supported: ['client_credentials'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['ES256'],
      claims_supported: ['sub', 'sid', 'auth_time', 'iss'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['ES256'],
      request_uri_parameter_supported: false,
    };
    assert.deepEqual(machineMetadata(openIdProvider, ['predict', 'models:read']), {
      issuer,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      scopes_supported: ['predict', 'models:read'],
      response_types_supported: [],
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['ES256'],
    });
  });
});
