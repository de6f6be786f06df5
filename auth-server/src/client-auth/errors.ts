import { errors } from 'oidc-provider';

/**
 * Client-authentication refusals of our own policy. They are oidc-provider's
 * `InvalidClientAuth` (401 `invalid_client`, rendered and reported as `grant.error` like
 * its own), but say why in `error_description`: the client needs to know its assertion
 * is refused for good, where "client authentication failed" would read like a bad key.
 */
class ClientAssertionRefused extends errors.InvalidClientAuth {
  constructor(description: string) {
    super(description);
    // InvalidClientAuth's description is the fixed "client authentication failed"; the detail stays for the logs.
    this.error_description = description;
  }
}

/** The assertion's `jti` was already presented (replay), on this or another replica, before or after a restart. */
export class ClientAssertionReplayed extends ClientAssertionRefused {
  override name = 'ClientAssertionReplayed';

  constructor() {
    super('client assertion already used: sign a new one (new jti) for every token request');
  }
}

/** The assertion is valid for longer than CLIENT_ASSERTION_MAX_LIFETIME allows. */
export class ClientAssertionLifetimeTooLong extends ClientAssertionRefused {
  override name = 'ClientAssertionLifetimeTooLong';

  constructor(
    readonly lifetimeSeconds: number,
    readonly maxSeconds: number,
  ) {
    super(`client assertion lifetime too long: ${lifetimeSeconds} s, at most ${maxSeconds} s is accepted (exp - iat, or exp - now without iat)`);
  }
}
