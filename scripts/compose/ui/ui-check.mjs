// The RabbitMQ management UI of the compose stack, in a real browser (Debian's chromium
// driven by playwright-core): log in, open Exchanges, Queues and Connections as an
// operator would, check that the hookrelay topology and the named connections are shown,
// and save a screenshot of each page. Run by scripts/compose-test.sh.
//
//   node ui-check.mjs --url http://127.0.0.1:15672/ --definitions definitions.json \
//     --out DIR --chromium /usr/bin/chromium --connection "hookrelay relay (" ...
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const opts = { connection: [] };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, '');
  if (Array.isArray(opts[key])) opts[key].push(argv[i + 1]);
  else opts[key] = argv[i + 1];
}
for (const k of ['url', 'definitions', 'out', 'chromium']) {
  if (!opts[k]) throw new Error(`--${k} is required`);
}
const defs = JSON.parse(readFileSync(opts.definitions, 'utf8'));
const user = opts.user ?? 'guest';
const password = opts.password ?? 'guest';
const TIMEOUT = 30_000;

const say = (msg) => console.error(`[ui-check] ${msg}`);
const problems = [];

// A fresh profile every run: nothing remembered from an earlier login.
const profile = mkdtempSync(join(tmpdir(), 'hookrelay-ui-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: opts.chromium,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);

  // Waits until the page's main content shows `text` (the UI refreshes its tables
  // asynchronously after each navigation).
  const shows = async (text, what) => {
    try {
      await page.locator('#main').getByText(text, { exact: false }).first().waitFor({ state: 'visible' });
      return true;
    } catch {
      problems.push(`${what}: "${text}" is not shown`);
      return false;
    }
  };
  // A name in one of the page's tables, exactly (hookrelay.archive must not be found
  // through hookrelay.archive.retry).
  const listed = async (name, what) => {
    const escaped = name.replace(/[.*+?^$()|[\]\\{}]/g, '\\$&');
    const exact = new RegExp('^\\s*' + escaped + '\\s*$');
    try {
      await page.locator('#main table a').filter({ hasText: exact }).first().waitFor({ state: 'visible' });
    } catch {
      problems.push(`${what}: "${name}" is not listed`);
    }
  };
  const shot = async (name) => {
    const path = join(opts.out, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    say(`screenshot ${path}`);
  };
  // Opens a tab of the UI by clicking it in the menu, like an operator.
  const open = async (tab, hash) => {
    await page.locator(`#tabs a[href="${hash}"]`).click();
    await page.waitForFunction((h) => location.hash === h, hash);
    await page.locator('#main h1').first().waitFor();
    say(`opened ${tab}`);
  };

  await page.goto(opts.url);
  await page.locator('input[name="username"]').fill(user);
  await page.locator('input[name="password"]').fill(password);
  await shot('login');
  await page.locator('input[type="submit"]').click();
  await page.locator('#logout').waitFor({ state: 'attached' });
  say(`logged in as ${user}`);
  await shows('Overview', 'overview');
  await shot('overview');

  // Exchanges: hookrelay.events, and its alternate exchange on its own page.
  await open('Exchanges', '#/exchanges');
  for (const ex of defs.exchanges) await listed(ex.name, 'Exchanges');
  await shot('exchanges');
  for (const ex of defs.exchanges) {
    const ae = ex.arguments?.['alternate-exchange'];
    if (!ae) continue;
    await page.locator('#main a', { hasText: new RegExp(`^${ex.name.replace(/\./g, '\\.')}$`) }).first().click();
    await page.locator('#main h1').getByText(ex.name).waitFor();
    if (await shows('alternate-exchange', `exchange ${ex.name}`)) {
      // The argument's value sits next to its name in the details table.
      await shows(ae, `exchange ${ex.name}'s alternate-exchange`);
    }
    await shot(`exchange-${ex.name}`);
    say(`exchange ${ex.name}: alternate-exchange ${ae}`);
  }

  // Queues: every queue of definitions.json.
  await open('Queues', '#/queues');
  for (const q of defs.queues) await listed(q.name, 'Queues');
  await shot('queues');
  say(`queues shown: ${defs.queues.map((q) => q.name).join(', ')}`);

  // Connections: the relay's and the workers' client-provided names.
  await open('Connections', '#/connections');
  for (const name of opts.connection) await shows(name, 'Connections');
  await shot('connections');
  say(`connections shown: ${opts.connection.join(', ')}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

if (problems.length) {
  console.error(`FAIL: the management UI does not show:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
say('the UI shows the exchange with its alternate exchange, every queue and the named connections');
