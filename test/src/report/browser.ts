import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';

/** Debian's Chromium (`apt-get install chromium`); playwright-core downloads no browser of its own. */
export const CHROMIUM_PATH = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

/** Why no browser can be started here, or undefined when one can. */
export async function missingBrowser(): Promise<string | undefined> {
  if (!existsSync(CHROMIUM_PATH)) return `no Chromium at ${CHROMIUM_PATH} (apt-get install -y chromium, or set CHROMIUM_PATH)`;
  try {
    await import('playwright-core');
  } catch {
    return 'playwright-core is not installed (npm ci)';
  }
  return undefined;
}

export interface LoadedPage {
  page: Page;
  /** console.error lines and uncaught errors of the page. */
  errors: string[];
  /** Requests the page tried to make to anything but its own file (none is allowed: the page is self-contained). */
  externalRequests: string[];
}

/**
 * Opens a report file in headless Chromium with the network cut off, runs `use`, closes the browser.
 * Every request that is not the file itself is refused and noted.
 */
export async function withReportPage<T>(path: string, use: (loaded: LoadedPage) => Promise<T>, viewport = { width: 1280, height: 900 }): Promise<T> {
  const { chromium } = await import('playwright-core');
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    const page = await browser.newPage({ viewport });
    const url = pathToFileURL(path).href;
    const errors: string[] = [];
    const externalRequests: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (error) => errors.push(error.message));
    await page.route('**/*', async (route) => {
      if (route.request().url() === url) return route.continue();
      externalRequests.push(route.request().url());
      return route.abort();
    });
    await page.goto(url, { waitUntil: 'load' });
    return await use({ page, errors, externalRequests });
  } finally {
    await browser.close();
  }
}

/**
 * For a test that needs the browser: true when it can run. Where Chromium is missing the test is
 * skipped with the reason, except under CI=true, where that is a failure (CI must check the page).
 */
export async function browserOrSkip(t: { skip: (message?: string) => void }): Promise<boolean> {
  const missing = await missingBrowser();
  if (!missing) return true;
  if (process.env['CI'] === 'true') throw new Error(`the report must be checked in a browser under CI, but ${missing}`);
  t.skip(`skipped: ${missing}`);
  return false;
}
