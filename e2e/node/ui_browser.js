// Drives Skein's web UI in real headless Chromium (Debian's `chromium`, through playwright-core) against a running
// skein-all-in-one loaded with the HotROD datasets and one 5,000-span trace. Run by e2e/tests/ui.rs:
//
//   node e2e/node/ui_browser.js <query base URL> <output dir> <big trace ID> [<token-guarded base URL> <token>]
//
// With the last two, it also signs in to a query service started with --query-auth-token-file.
//
// Each step checks what a user sees (search results, waterfall rows, the critical path, span details, the
// dependency graph) and saves a screenshot in <output dir>. The last line printed is a JSON report with the
// counts and timings the Rust test asserts on. Any failed check exits non-zero with the reason.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const [base, outDir, bigTraceId, authBase, authToken] = process.argv.slice(2);
if (!base || !outDir || !bigTraceId) {
  console.error('usage: node ui_browser.js <query base URL> <output dir> <big trace ID>');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const executablePath = process.env.SKEIN_CHROMIUM || '/usr/bin/chromium';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // The machine has no outside network: keep Chromium from trying to reach Google at start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  const report = { screenshots: [] };
  const consoleErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 1800 }, timezoneId: 'UTC', locale: 'en-GB' });
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    page.setDefaultTimeout(20000);
    const shot = async (name) => {
      const file = path.join(outDir, `${name}.png`);
      await page.screenshot({ path: file, fullPage: false });
      report.screenshots.push(file);
    };

    // 1. Search by service over the HotROD day (2023-01-24, UTC).
    await page.goto(`${base}/`);
    await page.waitForSelector('#search-service option[value="frontend"]', { state: 'attached' });
    await page.selectOption('#search-service', 'frontend');
    await page.waitForSelector('#search-operation option[value="HTTP GET /dispatch"]', { state: 'attached' });
    await page.selectOption('#search-lookback', 'custom');
    await page.fill('#search-start', '2023-01-24T00:00');
    await page.fill('#search-end', '2023-01-25T00:00');
    await page.fill('#search-limit', '50');
    await page.click('#search-submit');
    await page.waitForSelector('.result');
    report.searchResults = await page.locator('.result').count();
    report.searchErrorBadges = await page.locator('.result .badge.error').count();
    check(/#\/search\?service=frontend/.test(page.url()), `the search is in the URL: ${page.url()}`);
    await shot('1-search');

    // Tags narrow the search (logfmt, as in Jaeger UI): redis spans with error=true.
    await page.selectOption('#search-service', 'redis');
    await page.fill('#search-tags', 'error=true');
    await page.click('#search-submit');
    await page.waitForFunction(() => location.hash.includes('service=redis')
      && document.querySelector('#search-results .results-head, #no-results'));
    report.redisErrorTraces = await page.locator('.result').count();

    // 2. Open the 51-span trace with errors.
    await page.goto(`${base}/#/search?service=frontend&lookback=custom&start=1674518400000000&end=1674604800000000&limit=50`);
    await page.waitForSelector('.result[data-trace-id="00000000000000005d1a48d0a06d3991"]');
    await page.click('.result[data-trace-id="00000000000000005d1a48d0a06d3991"] .result-title');
    await page.waitForSelector('#waterfall .row');
    report.traceRows = await page.locator('#waterfall .row').count();
    report.traceErrorRows = await page.locator('#waterfall .row.error').count();
    report.criticalRows = await page.locator('#waterfall .row.critical').count();
    report.criticalSegments = await page.locator('#waterfall .cp-segment').count();
    report.rootRow = (await page.locator('#waterfall .row').first().innerText()).replace(/\s+/g, ' ').trim();
    await shot('2-trace-waterfall');

    // Span details: attributes, resource and events of the first error span.
    await page.locator('#waterfall .row.error').first().click();
    await page.waitForSelector('#span-details:not(.hidden) #span-tags');
    report.detailTags = await page.locator('#span-tags tr').count();
    report.detailResource = await page.locator('#span-resource tr').count();
    report.detailEvents = await page.locator('#span-events > li').count();
    await shot('3-span-details');

    // Collapse and expand.
    await page.click('#collapse-all');
    report.rowsCollapsed = await page.locator('#waterfall .row').count();
    await page.click('#expand-all');
    report.rowsExpanded = await page.locator('#waterfall .row').count();

    // The critical path toggle hides and shows the highlight.
    await page.uncheck('#show-critical-path');
    report.criticalRowsHidden = await page.locator('#waterfall .row.critical').count();
    await page.check('#show-critical-path');

    // 3. The dependency graph for the HotROD day.
    await page.click('[data-nav="dependencies"]');
    await page.waitForSelector('#deps-form');
    await page.fill('#deps-end', '2023-01-25T00:00');
    await page.selectOption('#deps-lookback', String(7 * 86400e3));
    await page.click('#deps-submit');
    await page.waitForSelector('#dependency-graph .node');
    report.graphNodes = await page.locator('#dependency-graph .node').count();
    report.graphEdges = await page.locator('#dependency-graph .edge').count();
    report.graphErrorEdges = await page.locator('#dependency-graph .edge.has-error').count();
    report.driverRedisLabel = await page.locator('#dependency-graph .edge[data-parent="driver"][data-child="redis"] text').textContent();
    await shot('4-dependencies');

    // 4. A 5,000-span trace: time to the first painted rows, and how many row elements exist (the waterfall only
    // renders the rows on screen).
    const t0 = Date.now();
    await page.goto(`${base}/#/trace/${bigTraceId}`);
    await page.waitForSelector('#waterfall .row');
    report.bigTraceOpenMs = Date.now() - t0;
    report.bigTraceRenderMs = Number(await page.evaluate(() => document.body.dataset.traceRenderMs));
    report.bigTraceRowElements = await page.locator('#waterfall .row').count();
    report.bigTraceHeightPx = await page.evaluate(() => document.querySelector('.waterfall-inner').offsetHeight);
    // Scroll to the end: the last span's row is painted.
    const t1 = Date.now();
    await page.evaluate(() => { const w = document.getElementById('waterfall'); w.scrollTop = w.scrollHeight; });
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll('#waterfall .row');
      const inner = document.querySelector('.waterfall-inner');
      return rows.length > 0 && parseFloat(rows[rows.length - 1].style.top) + 24 >= inner.offsetHeight;
    });
    report.bigTraceScrollToEndMs = Date.now() - t1;
    await shot('5-big-trace');

    // 5. A token-guarded query service: the UI asks for the token, refuses a wrong one, then works.
    if (authBase) {
      await page.goto(`${authBase}/`);
      await page.waitForSelector('#token-form');
      await page.fill('#token-input', 'not-the-token');
      await page.click('#token-submit');
      await page.waitForSelector('#token-form');
      await page.fill('#token-input', authToken);
      await page.click('#token-submit');
      await page.waitForSelector('#search-service option[value="frontend"]', { state: 'attached' });
      report.authSignedIn = true;
      await shot('6-signed-in');
      // The browser logs each refused (401) request as a console error; those are expected here.
      report.consoleErrors = consoleErrors.filter((e) => !/401/.test(e));
    } else {
      report.consoleErrors = consoleErrors;
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
