import { existsSync } from 'node:fs';
import { newSigningKeyFile, writeSigningKeyFile } from './signing-key-file.js';

// Explicit key material for production: `npm run keys:generate -- <path>` writes a new
// signing key file (mode 0600: a current key and the next one) that the auth-server
// accepts with NODE_ENV=production.
const path = process.argv[2];
if (!path) {
  process.stderr.write('usage: npm run keys:generate -- <path/to/signing-keys.json>\n');
  process.exit(2);
}
if (existsSync(path)) {
  process.stderr.write(`keys:generate: ${path} exists; refusing to overwrite signing keys\n`);
  process.exit(2);
}
const file = await newSigningKeyFile('keys-generate', new Date());
await writeSigningKeyFile(path, file);
process.stdout.write(`wrote signing keys ${file.keys.map((key) => `${key.kid} (${key.state})`).join(', ')} to ${path}\n`);
