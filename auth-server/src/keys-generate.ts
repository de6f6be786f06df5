import { existsSync } from 'node:fs';
import { generateSigningKey, writeSigningKeyFile } from './signing-keys.js';

// Explicit key material for production: `npm run keys:generate -- <path>` writes a new
// signing key file (mode 0600) that the auth-server accepts with NODE_ENV=production.
const path = process.argv[2];
if (!path) {
  process.stderr.write('usage: npm run keys:generate -- <path/to/signing-keys.json>\n');
  process.exit(2);
}
if (existsSync(path)) {
  process.stderr.write(`keys:generate: ${path} exists; refusing to overwrite signing keys\n`);
  process.exit(2);
}
const key = await generateSigningKey();
await writeSigningKeyFile(path, { version: 1, origin: 'keys-generate', keys: [key] });
process.stdout.write(`wrote signing key ${key.kid} to ${path}\n`);
