import { generateKeyPair, SignJWT } from 'jose';
import { TEST_AUDIENCE, type RunningPredictor } from './system.js';

/** A value from the predictor's /metrics (on its metrics listener): the first capture group of `pattern`, 0 when absent. */
export async function metric(predictor: Pick<RunningPredictor, 'metricsUrl'>, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${predictor.metricsUrl}/metrics`)).text();
  return Number(pattern.exec(text)?.[1] ?? 0);
}

/** A well-formed access token for the test audience, signed by a key the issuer never published. */
export async function tokenSignedByUnpublishedKey(issuer: string, kid: string): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ client_id: 'demo-caller', scope: 'predict', jti: kid, sub: 'demo-caller' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid })
    .setIssuer(issuer)
    .setAudience(TEST_AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + 60)
    .sign(privateKey);
}
