import { parseArgs } from 'node:util';
import { withReportPage } from './browser.js';

// node --import tsx test/src/report/screenshot.ts <report.html> <out.png> [--height 1700]
// The picture of a report in docs/ (docs/images/scenario-report.png) is made with this.
const { positionals, values } = parseArgs({ allowPositionals: true, options: { height: { type: 'string', default: '1700' } } });
const [report, out] = positionals;
if (!report || !out) {
  process.stderr.write('usage: screenshot.ts <report.html> <out.png> [--height px]\n');
  process.exit(2);
}
await withReportPage(report, async ({ page, errors }) => {
  if (errors.length > 0) throw new Error(`the page logged errors: ${errors.join('; ')}`);
  const height = Math.min(Number(values.height), (await page.locator('body').boundingBox())!.height + 48);
  await page.screenshot({ path: out, clip: { x: 0, y: 0, width: 1280, height }, fullPage: true });
});
