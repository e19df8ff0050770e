// Drives page.html in headless Chromium for tests/e2e/test_browser.py: prints every JsSIP
// event of the page as one JSON line on stdout, and takes commands on stdin, one per line:
// "hangup", "call TARGET", "quit". Environment: SLB_CHROMIUM (the browser), SLB_PAGE (the
// page's URL), SLB_WSS (sipslb's wss:// URL), SLB_URI (the page's SIP URI), NODE_PATH (where
// puppeteer-core is installed). Bounded: it quits by itself after SLB_MAX_S seconds.
import { createRequire } from 'node:module';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
const puppeteer = require(process.env.NODE_PATH + '/puppeteer-core');
const out = o => process.stdout.write(JSON.stringify(o) + '\n');

// The test's throwaway server certificate, trusted by its key (SLB_SPKI: base64 SHA-256 of
// its SubjectPublicKeyInfo): --ignore-certificate-errors alone does not cover WebSockets.
const browser = await puppeteer.launch({
  executablePath: process.env.SLB_CHROMIUM,
  headless: true,
  acceptInsecureCerts: true,
  args: ['--no-sandbox', '--ignore-certificate-errors',
         '--ignore-certificate-errors-spki-list=' + (process.env.SLB_SPKI || ''),
         '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', '--disable-gpu',
         '--no-first-run',
         // Chromium's Local Network Access checks block a page's WebSocket to a loopback
         // address (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS) without a user's permission.
         '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,' +
             'PrivateNetworkAccessSendPreflights'],
});
const page = await browser.newPage();
page.on('console', m => out({event: 'console', text: m.text()}));
page.on('pageerror', e => out({event: 'pageerror', text: String(e)}));
await page.goto(process.env.SLB_PAGE);
out({event: 'browser', version: await browser.version()});
await page.evaluate(cfg => window.slbStart(cfg), {wss: process.env.SLB_WSS, uri: process.env.SLB_URI});

let seen = 0, done = false;
const timer = setInterval(async () => {
  try {
    const ev = await page.evaluate(n => window.slbEvents.slice(n), seen);
    seen += ev.length;
    ev.forEach(out);
  } catch (e) { out({event: 'driver-error', text: String(e)}); }
}, 100);
async function quit() {
  if (done) return;
  done = true;
  clearInterval(timer);
  try { await page.evaluate(() => window.slbUa && window.slbUa.stop()); } catch (e) {}
  await new Promise(r => setTimeout(r, 300));
  await browser.close();
  out({event: 'quit'});
  process.exit(0);
}
setTimeout(quit, 1000 * Number(process.env.SLB_MAX_S || 60));
readline.createInterface({input: process.stdin}).on('line', async line => {
  const [cmd, arg] = line.trim().split(/\s+/, 2);
  if (cmd === 'hangup') await page.evaluate(() => window.slbHangup());
  else if (cmd === 'call') await page.evaluate(t => window.slbCall(t), arg);
  else if (cmd === 'quit') await quit();
}).on('close', quit);
