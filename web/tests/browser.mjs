// The de-identification page in a real browser (Debian's Chromium, headless): once with WebGPU on
// SwiftShader, once with WebGPU off (the CPU backend compiled to wasm: serve-web makes the page
// cross-origin isolated, so it runs the threaded build in a worker, on every core), and once with
// WebGPU off and the isolation headers removed (the CPU on the page's own thread). For each, the page loads
// the fixture token-classification model from `runtime-cli serve-web`, `window.deid` runs on
// several notes (one longer than 4,000 tokens, cut into windows), and its spans and redacted text
// must equal `runtime-cli deid` on the same model and notes; no request may follow the model
// load, and the page's policy must refuse one; the UI path (paste, Ctrl+Enter, highlights) is
// exercised and a screenshot saved; on the CPU run, folders are picked with the file input (a
// masked-LM folder refused with its reason, then the token-classification folder). Last, with
// `serve-web` given no model, the page loads the bundled deid-small by default and redacts the
// example note exactly as `runtime-cli deid` does with its own default.
//
// Environment: RUNTIME_CLI (the binary), MODEL (the model folder), NOTES (sample notes, JSONL),
// ROOT (web/dist), OUT (screenshots), CHROMIUM (default /usr/bin/chromium).
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (k, d) => process.env[k] ?? d ?? (() => { throw new Error(`set ${k}`); })();
const cli = env('RUNTIME_CLI'), model = env('MODEL'), notesFile = env('NOTES'), root = env('ROOT', 'web/dist'), out = env('OUT', 'target/web-test');
const THRESHOLD = 0.3;
mkdirSync(out, { recursive: true });

// The sample notes, one with non-ASCII text (offsets count code points), and one long note
// (over 6,000 characters of digit-heavy text, at least 4,000 tokens: many windows of the model).
const samples = readFileSync(notesFile, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l).text);
let long = '';
while (long.length < 6_000) long += samples.join('\n\n') + '\n\n';
const notes = [...samples, 'Patiënt José Müller (DOB 03/04/1950) – seen 2× for “chest pain”; metoprolol 25 mg 🙂 daily.', long];
const notesPath = `${out}/notes.jsonl`;
writeFileSync(notesPath, notes.map((text) => JSON.stringify({ text })).join('\n') + '\n');
const expected = execFileSync(cli, ['deid', notesPath, '--model', model, '--device', 'cpu', '--threshold', String(THRESHOLD)], { maxBuffer: 1 << 28 })
  .toString().split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

function fail(msg) { throw new Error(msg); }

function compare(kind, i, got, want) {
  const where = `${kind}, note ${i}`;
  if (got.redacted !== want.redacted) fail(`${where}: redacted text differs from runtime-cli deid`);
  if (got.spans.length !== want.spans.length) fail(`${where}: ${got.spans.length} spans, runtime-cli found ${want.spans.length}`);
  got.spans.forEach((s, k) => {
    const w = want.spans[k];
    if (s.start !== w.start || s.end !== w.end || s.label !== w.label || s.text !== w.text) fail(`${where}, span ${k}: ${JSON.stringify(s)} vs ${JSON.stringify(w)}`);
    if (Math.abs(s.score - w.score) > 1e-3) fail(`${where}, span ${k}: score ${s.score} vs ${w.score}`);
  });
}

// `runtime-cli serve-web` with these arguments; resolves to [the process, its base URL].
async function serve(args) {
  const proc = spawn(cli, ['serve-web', '--root', root, '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((resolve, reject) => {
    let err = '';
    proc.stderr.on('data', (d) => { err += d; const m = err.match(/at (http:\/\/[^/\s]+\/)/); if (m) resolve(m[1]); });
    proc.on('exit', (code) => reject(new Error(`serve-web exited (${code}): ${err}`)));
  });
  return [proc, url];
}

const [server, base] = await serve(['--model', model]);

const common = ['--headless=new', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
try {
  for (const [kind, args] of [['webgpu', ['--enable-unsafe-webgpu']], ['cpu', ['--disable-webgpu']], ['cpu, not isolated', ['--disable-webgpu']]]) {
    const t0 = Date.now();
    const browser = await chromium.launch({ executablePath: env('CHROMIUM', '/usr/bin/chromium'), args: [...common, ...args] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const isolated = kind !== 'cpu, not isolated';
    if (!isolated) {
      // The same server's responses without COOP/COEP: no SharedArrayBuffer, so no wasm threads.
      await page.route('**/*', async (route) => {
        const r = await route.fetch();
        const headers = { ...r.headers() };
        delete headers['cross-origin-opener-policy'];
        delete headers['cross-origin-embedder-policy'];
        await route.fulfill({ response: r, headers });
      });
    }
    const logs = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    let loaded = false;
    const late = [];
    page.on('request', (r) => { if (loaded) late.push(r.url()); });
    await page.goto(base);
    try {
      await page.evaluate(() => window.modelReady, null, { timeout: 300_000 });
    } catch (e) {
      fail(`${kind}: the model did not load: ${e.message}\n${logs.join('\n')}`);
    }
    loaded = true;
    const device = await page.textContent('#info-device');
    if (kind === 'webgpu' && !device.startsWith('WebGPU')) fail(`webgpu run: the page runs on "${device}"\n${logs.join('\n')}`);
    if (kind.startsWith('cpu')) {
      if (!device.startsWith('CPU')) fail(`${kind} run: the page runs on "${device}"`);
      if (await page.isHidden('#device-note')) fail(`${kind} run: the page does not say that WebGPU is missing`);
      const [crossOriginIsolated, cores] = await page.evaluate(() => [self.crossOriginIsolated, navigator.hardwareConcurrency]);
      if (crossOriginIsolated !== isolated) fail(`${kind} run: crossOriginIsolated is ${crossOriginIsolated}`);
      // Isolated: the worker's pool has a thread per core (one-core machines stay on one thread).
      const want = isolated && cores > 1 ? `${cores} threads` : 'one thread';
      if (!device.includes(want)) fail(`${kind} run: the page runs on "${device}", expected ${want}`);
    }
    for (const [i, text] of notes.entries()) {
      const got = await page.evaluate(([t, th]) => window.deid(t, { threshold: th }), [text, THRESHOLD]);
      compare(kind, i, got, expected[i]);
    }
    // The UI path, with the long note: paste, run (keyboard: Ctrl+Enter), see highlights and
    // the redacted text, and the token count of the long note.
    const k = notes.length - 1;
    await page.fill('#note', notes[k]);
    await page.focus('#note');
    await page.keyboard.press('Control+Enter');
    await page.waitForFunction(() => !document.querySelector('#output').hidden && !document.querySelector('#run').disabled, null, { timeout: 300_000 });
    if ((await page.inputValue('#redacted')) !== expected[k].redacted) fail(`${kind}: the page's redacted text differs`);
    const marks = await page.locator('#highlighted mark').count();
    if (marks !== expected[k].spans.length) fail(`${kind}: ${marks} highlights for ${expected[k].spans.length} spans`);
    const timing = await page.textContent('#timing');
    const tokens = Number((timing.match(/(\d+) tokens in/) || [])[1]);
    if (!(tokens >= 4000)) fail(`${kind}: the long note has ${tokens} tokens (${timing}); the test wants at least 4,000`);
    await page.screenshot({ path: `${out}/deid-${kind.replace(/\W+/g, '-')}.png` });
    if (late.length) fail(`${kind}: requests after the model was loaded: ${late.join(', ')}`);
    // And the page has told the browser to refuse any: a fetch of its own index fails.
    const probe = await page.evaluate(() => fetch('/index.html').then(() => 'fetched', () => 'refused'));
    if (probe !== 'refused') fail(`${kind}: a fetch after loading was not refused by the page's policy`);
    if (kind === 'cpu') {
      // A folder picked on the computer: a masked-LM folder is refused with the reason and the
      // loaded model stays usable; the token-classification folder then replaces it.
      const fixtures = model.replace(/\/[^/]+\/?$/, '');
      await page.setInputFiles('#folder', `${fixtures}/tiny-modernbert-mlm`);
      await page.waitForFunction(() => document.querySelector('#model-status').className === 'error', null, { timeout: 120_000 });
      const msg = await page.textContent('#model-status');
      if (!msg.includes('token-classification head') || !msg.includes('previous model stays loaded')) fail(`cpu: picking an MLM folder says "${msg}"`);
      if (await page.isDisabled('#run')) fail('cpu: a refused folder disabled the loaded model');
      await page.setInputFiles('#folder', model);
      await page.waitForFunction(() => document.querySelector('#model-status').textContent.startsWith('Model ready'), null, { timeout: 120_000 });
      if ((await page.textContent('#info-name')) !== 'tiny-modernbert-tokcls') fail('cpu: the picked folder is not named');
      compare('cpu, picked folder', 0, await page.evaluate(([t, th]) => window.deid(t, { threshold: th }), [notes[0], THRESHOLD]), expected[0]);
      // ?threads=N is capped at the cores (and a value that is not a number means every core).
      for (const asked of ['64', 'many']) {
        await page.goto(`${base}?threads=${asked}`);
        await page.evaluate(() => window.modelReady, null, { timeout: 300_000 });
        const cores = await page.evaluate(() => navigator.hardwareConcurrency);
        const shown = await page.textContent('#info-device');
        if (cores > 1 && !shown.includes(`${cores} threads`)) fail(`cpu, ?threads=${asked}: the page runs on "${shown}", expected ${cores} threads`);
      }
    }
    console.log(`${kind}: ${notes.length} notes match runtime-cli deid (${device}); the ${tokens}-token note in the page: ${marks} highlights; no request after load (and fetches refused); ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    await browser.close();
  }
} finally {
  server.kill();
}

// The defaults: serve-web without --model serves models/deid-small; the page loads it on its own.
{
  const example = readFileSync(env('EXAMPLE'), 'utf8');
  const want = JSON.parse(execFileSync(cli, ['deid', env('EXAMPLE'), '--device', 'cpu', '--threshold', String(THRESHOLD)]).toString().split('\n')[0]);
  const [bundled, url] = await serve([]);
  try {
    const browser = await chromium.launch({ executablePath: env('CHROMIUM', '/usr/bin/chromium'), args: [...common, '--enable-unsafe-webgpu'] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(url);
    await page.evaluate(() => window.modelReady, null, { timeout: 300_000 });
    const params = await page.textContent('#info-params'), labels = await page.textContent('#info-labels');
    if (!params.includes('6 layers, hidden 256') || !labels.includes('PROFESSION')) fail(`bundled: the page's default model is not deid-small: ${params}; ${labels}`);
    const got = await page.evaluate(([t, th]) => window.deid(t, { threshold: th }), [example, THRESHOLD]);
    compare('bundled deid-small', 0, got, want);
    await page.fill('#note', example);
    await page.click('#run');
    await page.waitForFunction(() => !document.querySelector('#output').hidden && !document.querySelector('#run').disabled, null, { timeout: 300_000 });
    await page.screenshot({ path: `${out}/deid-bundled.png` });
    console.log(`bundled: the page's default model is deid-small; the example note gives the same ${want.spans.length} spans as runtime-cli deid`);
    await browser.close();
  } finally {
    bundled.kill();
  }
}
