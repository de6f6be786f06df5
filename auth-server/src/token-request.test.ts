import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTokenForm, presentsNoClient, repeatedQueryParameter, single } from './token-request.js';

describe('token request parsing', () => {
  it('keeps a repeated body parameter as an array, so that oidc-provider refuses it', () => {
    const form = parseTokenForm('grant_type=client_credentials&scope=predict&scope=models%3Aread');
    assert.deepEqual(form['scope'], ['predict', 'models:read']);
    assert.equal(single(form, 'scope'), undefined);
    assert.equal(single(form, 'grant_type'), 'client_credentials');
  });

  it('finds a parameter repeated in the query string or present in both the query and the body', () => {
    const form = parseTokenForm('grant_type=client_credentials&scope=predict');
    assert.equal(repeatedQueryParameter('', form), undefined);
    assert.equal(repeatedQueryParameter('tenant=a', form), undefined);
    assert.equal(repeatedQueryParameter('scope=predict', form), 'scope');
    assert.equal(repeatedQueryParameter('grant_type=client_credentials', form), 'grant_type');
    assert.equal(repeatedQueryParameter('audience=a&audience=b', form), 'audience');
  });

  it('tells a request without any client authentication from one that names a client or presents a credential', () => {
    assert.ok(presentsNoClient(undefined, parseTokenForm('grant_type=client_credentials')));
    assert.ok(!presentsNoClient('Basic ZGVtbzpzZWNyZXQ=', parseTokenForm('grant_type=client_credentials')));
    assert.ok(!presentsNoClient(undefined, parseTokenForm('grant_type=client_credentials&client_id=demo')));
    assert.ok(!presentsNoClient(undefined, parseTokenForm('grant_type=client_credentials&client_secret=s')));
    assert.ok(!presentsNoClient(undefined, parseTokenForm('grant_type=client_credentials&client_assertion=a.b.c')));
  });
});
