import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { CHROMIUM_PATH, missingBrowser } from '../src/report/browser.js';
import { startAuthServer, startPredictor, type RunningPredictor } from '../src/harness/system.js';

// The page's `document`, in the functions Playwright runs there (this project compiles without the DOM's
// types). Functions, not strings: the page's Content-Security-Policy forbids evaluating strings.
declare const document: { body: { innerText: string } };

/**
 * /docs in a real headless Chromium: it renders the API from what the predictor serves and
 * nothing else (air-gapped deployments reach no CDN). Skipped where Chromium is missing,
 * except under CI=true, where that fails: CI must check the page.
 */
describe('the API reference page at /docs', () => {
  let missing: string | undefined;
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>> | undefined;
  let predictor: RunningPredictor;

  before(async () => {
    missing = await missingBrowser();
    if (missing) return;
    dataDir = await temporaryDirectory('api-reference');
    const auth = await startAuthServer({ dataDir: dataDir.path });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: dataDir.path });
  });
  after(async () => {
    await stopAll();
    await dataDir?.remove();
  });

  it('loads with no request leaving the predictor’s origin, and names POST /v1/predict', async (t) => {
    if (missing) {
      if (process.env['CI'] === 'true') assert.fail(`the API reference page must be checked in a browser under CI, but ${missing}`);
      t.skip(`skipped: ${missing}`);
      return;
    }
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    try {
      const page = await browser.newPage();
      const origin = new URL(predictor.url).origin;
      const requested: string[] = [];
      const errors: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      page.on('pageerror', (error) => errors.push(error.message));
      // Every request is noted; one to another origin is refused on the spot (and fails the test below).
      await page.route('**/*', async (route) => {
        const url = route.request().url();
        requested.push(url);
        return new URL(url).origin === origin ? route.continue() : route.abort();
      });

      const response = await page.goto(`${predictor.url}/docs`, { waitUntil: 'load' });
      assert.equal(response?.status(), 200);
      // Swagger UI renders the operations once it has fetched and parsed /openapi.json.
      await page.waitForFunction(() => /POST\s*\/v1\/predict/.test(document.body.innerText), undefined, { timeout: 15_000 });
      await page.waitForLoadState('networkidle');

      const text = await page.evaluate(() => document.body.innerText);
      assert.match(text, /POST\s*\/v1\/predict/);
      assert.match(text, /GET\s*\/v1\/models/);
      assert.match(text, /Authorize/, 'the security schemes are offered');
      assert.deepEqual(requested.filter((url) => new URL(url).origin !== origin), [], 'every request stays on the predictor');
      assert.ok(requested.includes(`${origin}/openapi.json`), `the page loads the document: ${requested.join(', ')}`);
      assert.ok(requested.some((url) => url.endsWith('/docs/assets/swagger-ui-bundle.js')), requested.join(', '));
      assert.deepEqual(errors, [], 'no console errors (a Content-Security-Policy violation would be one)');
    } finally {
      await browser.close();
    }
  });
});
