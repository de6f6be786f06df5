import { randomBytes } from 'node:crypto';
import Provider, { errors, type Adapter, type ClientMetadata, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { StoredClient } from './clients/registry.js';
import { SIGNING_ALG, type SigningKey } from './keys/signing-key-file.js';
import { assertClientAssertionLifetime } from './client-auth/assertion-lifetime.js';
import { restrictToMachineEndpoints } from './metadata.js';

/** The scopes the predictor understands (contract, section 3). */
export const PREDICTOR_SCOPES = ['predict', 'models:read'] as const;

/**
 * The `alg`s a DPoP proof may be signed with (RFC 9449 section 5.1,
 * `dpop_signing_alg_values_supported`): asymmetric only, oidc-provider's default
 * (ES256, Ed25519, EdDSA) plus PS256 for callers whose keys are RSA. The predictor
 * accepts the same list by default (its DPOP_ALGORITHMS).
 */
export const DPOP_SIGNING_ALGS = ['ES256', 'EdDSA', 'Ed25519', 'PS256'] as const;

/** Server-provided DPoP nonces (RFC 9449 section 8). */
export interface DpopNonceOptions {
  /** 32 bytes; the same on every replica (nonces are derived from it, not stored). */
  secret: Buffer;
  /** Refuse every proof without a current nonce (`use_dpop_nonce`); false: only proofs whose `iat` is outside the window need one. */
  required: boolean;
}

export interface ProviderOptions {
  issuer: string;
  /** Resource indicator (RFC 8707) of the predictor: the `aud` of every access token. */
  audience: string;
  /** Access-token lifetime in seconds. */
  accessTokenTtlSeconds: number;
  /** Enabled clients. */
  clients: StoredClient[];
  /** Published in the JWKS (next, current, previous). */
  publishedKeys: SigningKey[];
  /** The one key that signs. */
  signingKid: string;
  /** Replaces oidc-provider's secret comparison: hashed secrets and the overlap window of a rotation. */
  verifySecret: (clientId: string, presented: string) => boolean;
  /** Storage shared by replicas; undefined: oidc-provider's in-memory adapter. */
  adapter?: (new (model: string) => Adapter) | undefined;
  /** The longest private_key_jwt assertion lifetime accepted (seconds); undefined: no bound. */
  clientAssertionMaxLifetimeSeconds?: number | undefined;
  /** Server-provided DPoP nonces; undefined: none (proofs are checked on `iat` and `jti`). */
  dpopNonces?: DpopNonceOptions | undefined;
}

/** oidc-provider's default `clockTolerance` (seconds), which this configuration keeps. */
const CLOCK_TOLERANCE_SECONDS = 15;

/**
 * RFC 6749 section 5.2: a scope that is unknown or malformed is `invalid_scope`.
 * oidc-provider drops any scope its resource server does not define (`scope=admin` gave
 * a token without scope). Called from getResourceServerInfo, the hook every token
 * request passes after client authentication, before scopes are filtered.
 */
function rejectUnknownScopes(scope: unknown): void {
  if (typeof scope !== 'string') return;
  const known = new Set<string>(PREDICTOR_SCOPES);
  const unknown = scope.split(' ').filter((value) => !known.has(value));
  if (unknown.length > 0) throw new errors.InvalidScope('requested scope is not supported', unknown.join(' '));
}

function toClientMetadata(client: StoredClient): ClientMetadata {
  const common = {
    client_id: client.clientId,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: client.scopes.join(' '),
    plan: client.plan,
    // RFC 9449 section 5.2: such a client's token request without a proof is refused (400
    // invalid_grant, "DPoP proof JWT not provided": oidc-provider's checkDpopRequired).
    dpop_bound_access_tokens: client.dpopBoundAccessTokens === true,
  };
  if (client.authMethod === 'private_key_jwt') {
    return { ...common, token_endpoint_auth_method: 'private_key_jwt', jwks: client.jwks };
  }
  // oidc-provider insists on a client_secret for secret-based methods; the real check is verifySecret.
  return { ...common, token_endpoint_auth_method: client.authMethod, client_secret: randomBytes(32).toString('base64url') };
}

/** The DPoP refusals oidc-provider answers with a bare invalid_grant ("grant request is invalid"). */
const DPOP_GRANT_ERRORS = new Set(['DPoP proof JWT not provided', 'DPoP proof JWT Replay detected']);

/**
 * oidc-provider keeps the reason of an invalid_grant in `error_detail`, which it does not
 * send: a client refused for a missing or replayed DPoP proof would read only "grant
 * request is invalid". The event fires after the body is set and before it is sent.
 */
function explainDpopRefusals(provider: Provider): void {
  provider.on('grant.error', (ctx: KoaContextWithOIDC, error: Error & { error_detail?: string }) => {
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (body?.error === 'invalid_grant' && error.error_detail !== undefined && DPOP_GRANT_ERRORS.has(error.error_detail)) body.error_description = error.error_detail;
  });
}

/**
 * A machine-to-machine authorization server: client credentials only, RFC 9068 JWT
 * access tokens for the predictor, no interactive endpoints. Built anew (and swapped
 * in by AuthHttpServer) whenever keys or clients change: oidc-provider fixes both at
 * construction.
 */
export async function createProvider(options: ProviderOptions): Promise<Provider> {
  const { audience, accessTokenTtlSeconds } = options;
  const predictor = {
    scope: PREDICTOR_SCOPES.join(' '),
    audience,
    accessTokenTTL: accessTokenTtlSeconds,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: SIGNING_ALG, kid: options.signingKid } },
  } as const;

  const configuration: Configuration = {
    ...(options.adapter ? { adapter: options.adapter } : {}),
    clients: options.clients.map(toClientMetadata),
    jwks: { keys: options.publishedKeys.map((key) => key.privateJwk) as NonNullable<Configuration['jwks']>['keys'] },
    scopes: [...PREDICTOR_SCOPES],
    responseTypes: [],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    enabledJWA: { clientAuthSigningAlgValues: ['ES256', 'EdDSA', 'PS256', 'RS256'], dPoPSigningAlgValues: [...DPOP_SIGNING_ALGS] },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      // Static clients are validated against the available keys; with EC keys only the
      // default RS256 would make every client invalid (see shared notes).
      id_token_signed_response_alg: SIGNING_ALG,
    },
    extraClientMetadata: { properties: ['plan'] },
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    ...(options.clientAssertionMaxLifetimeSeconds === undefined
      ? {}
      : {
          assertJwtClientAuthClaimsAndHeader: assertClientAssertionLifetime({
            maxSeconds: options.clientAssertionMaxLifetimeSeconds,
            toleranceSeconds: CLOCK_TOLERANCE_SECONDS,
            nowSeconds: () => Math.floor(Date.now() / 1000),
          }),
        }),
    extraTokenClaims: (ctx: KoaContextWithOIDC) => ({ plan: ctx.oidc.client?.['plan'] }),
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      revocation: { enabled: false },
      userinfo: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      // RFC 9449: a token request with a DPoP proof gets a token bound to the proof's key
      // (`cnf.jkt`, token_type DPoP), which the predictor accepts only with a proof of that key.
      // Proofs are accepted once (their jti, in the ReplayDetection records the adapter keeps,
      // shared by replicas), and their htu must be ISSUER/token (urlFor is built from the issuer).
      dPoP: {
        enabled: true,
        allowReplay: false,
        ...(options.dpopNonces ? { nonceSecret: options.dpopNonces.secret, requireNonce: () => options.dpopNonces!.required } : {}),
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== audience) throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          rejectUnknownScopes(ctx.oidc.params?.['scope']);
          return predictor;
        },
      },
    },
    ttl: { ClientCredentials: accessTokenTtlSeconds },
    clientBasedCORS: () => false,
    // Machine clients get JSON errors, never the HTML page oidc-provider renders for browsers.
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };

  const provider = new Provider(options.issuer, configuration);
  restrictToMachineEndpoints(provider, { scopes: PREDICTOR_SCOPES });
  explainDpopRefusals(provider);
  const { verifySecret } = options;
  provider.Client.prototype.compareClientSecret = function compareHashedSecret(this: { clientId: string }, actual: string) {
    return verifySecret(this.clientId, actual);
  };
  // Static clients are validated lazily; looking each one up fails at start-up instead of at the first token request.
  for (const client of options.clients) {
    const found = await provider.Client.find(client.clientId);
    if (!found) throw new Error(`client ${client.clientId} failed validation`);
  }
  return provider;
}
