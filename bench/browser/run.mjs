// In-browser benchmark: our ModernBERT runtime (web/dist, wasm + WebGPU) against transformers.js
// (@huggingface/transformers, ONNX Runtime Web's WebGPU execution provider) in one headless
// Chromium page, on the same random-weight model (bench/browser/make_model.py) and the same texts.
//
//   node bench/browser/run.mjs [--model /tmp/bench-browser/model] [--lengths 128,512,2048]
//        [--long 8192] [--reps 3] [--timeout 600] [--long-timeout 900] [--out bench/browser/latest.md] [--theirs-device webgpu]
//
// Serves web/dist, the model folder, this folder's page/ and node_modules (transformers.js and
// onnxruntime-web) from a local static server; nothing else is fetched. Environment: CHROMIUM
// (default /usr/bin/chromium).
import http from 'node:http';
import { createReadStream, statSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve, extname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt; };
const MODEL = resolve(opt('model', '/tmp/bench-browser/model'));
const LENGTHS = opt('lengths', '128,512,2048').split(',').filter(Boolean).map(Number);
const LONG = Number(opt('long', '8192')); // 0: skip the long case
const REPS = Number(opt('reps', '3'));
const TIMEOUT = Number(opt('timeout', '600')) * 1000; // per call
const LONG_TIMEOUT = Number(opt('long-timeout', '900')) * 1000; // the long case's one run, per side
const OUT = resolve(opt('out', join(HERE, 'latest.md')));
const THEIRS_DEVICE = opt('theirs-device', 'webgpu');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

if (!existsSync(join(MODEL, 'onnx/model.onnx'))) throw new Error(`${MODEL}: no onnx/model.onnx; run python3 bench/browser/make_model.py first`);
if (!existsSync(join(REPO, 'web/dist/pkg/web_bg.wasm'))) throw new Error('web/dist/pkg is not built (web/build.sh)');

// ---- static server -------------------------------------------------------------------------
const ROUTES = [
  ['/ours/', join(REPO, 'web/dist')],
  ['/model/', MODEL],
  ['/page/', join(HERE, 'page')],
  ['/tfjs/', join(HERE, 'node_modules/@huggingface/transformers/dist')],
  ['/ort/', join(HERE, 'node_modules/onnxruntime-web/dist')],
];
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css' };
const served = [];
const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  served.push(url);
  const headers = {
    // Cross-origin isolation: lets ONNX Runtime Web use wasm threads (SharedArrayBuffer).
    'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cache-Control': 'no-store',
  };
  let file = null;
  if (url === '/' || url === '/index.html') file = join(HERE, 'page/index.html');
  for (const [prefix, dir] of ROUTES) {
    if (url.startsWith(prefix)) {
      const p = normalize(join(dir, url.slice(prefix.length)));
      if (p.startsWith(dir)) file = p;
    }
  }
  let st = null;
  try { st = file && statSync(file); } catch { st = null; }
  if (!st || !st.isFile()) { res.writeHead(404, headers); res.end('not found'); return; }
  res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] || 'application/octet-stream', 'Content-Length': st.size });
  createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const BASE = `http://127.0.0.1:${server.address().port}/`;

// ---- browser ---------------------------------------------------------------------------------
// The flags of web/tests/browser.mjs: WebGPU on SwiftShader when there is no GPU.
const ARGS = ['--headless=new', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic', '--enable-unsafe-webgpu'];
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
const chromiumVersion = browser.version();

const logs = [];
async function openPage() {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  page.on('crash', () => logs.push('page crashed'));
  await page.goto(BASE);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 120_000 }).catch((e) => {
    throw new Error(`the bench page did not start: ${e.message}\n${logs.join('\n')}`);
  });
  return page;
}

// page.evaluate with a deadline (a GPU job cannot be cancelled: on timeout the page is abandoned).
async function call(page, fn, arg, ms = TIMEOUT) {
  let timer;
  const deadline = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms / 1000} s`)), ms); });
  try {
    return await Promise.race([page.evaluate(({ fn, arg }) => window.bench[fn](arg), { fn, arg }), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const fmt = (x, d = 1) => (x == null || !isFinite(x) ? '—' : x.toFixed(d));
const stamp = () => `[${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s]`;
const T0 = Date.now();

const page = await openPage();
const adapter = await call(page, 'adapterInfo');
console.log(`${stamp()} Chromium ${chromiumVersion}; adapter ${JSON.stringify(adapter)}`);
const texts = await call(page, 'texts');
const oursLoad = await call(page, 'loadOurs');
console.log(`${stamp()} ours loaded in ${fmt(oursLoad.seconds, 2)} s: ${JSON.stringify(oursLoad.info)}`);
if (oursLoad.info.backend && !/webgpu|wgpu|gpu/i.test(oursLoad.info.backend)) console.log(`warning: ours runs on ${oursLoad.info.backend}`);
let theirsLoad = null, theirsLoadError = null;
try {
  theirsLoad = await call(page, 'loadTheirs', THEIRS_DEVICE);
  console.log(`${stamp()} transformers.js loaded (${THEIRS_DEVICE}) in ${fmt(theirsLoad.seconds, 2)} s`);
} catch (e) {
  theirsLoadError = e.message.split('\n')[0];
  console.log(`${stamp()} transformers.js failed to load: ${e.message}\n${logs.slice(-20).join('\n')}`);
}

// One measurement; {ok, tokens, seconds, ...} or {ok: false, error}.
async function measure(pg, side, text, ms = TIMEOUT) {
  try {
    const r = await call(pg, side === 'ours' ? 'runOurs' : 'runTheirs', text, ms);
    return { ok: true, ...r };
  } catch (e) {
    return { ok: false, error: e.message.split('\n')[0].slice(0, 300) };
  }
}

const rows = [];
for (const n of LENGTHS) {
  const text = texts[String(n)];
  if (!text) throw new Error(`texts.json has no text for ${n} tokens (make_model.py --lengths)`);
  const res = { ours: [], theirs: [] };
  const warm = {};
  const err = {};
  // Warm-up (pipelines/shaders for this shape), then REPS interleaved runs.
  for (let rep = 0; rep <= REPS; rep++) {
    for (const side of ['ours', 'theirs']) {
      if (err[side] || (side === 'theirs' && !theirsLoad)) continue;
      const r = await measure(page, side, text);
      if (!r.ok) { err[side] = r.error; console.log(`${stamp()} ${n}: ${side} failed: ${r.error}`); continue; }
      console.log(`${stamp()} ${n}: ${side} ${rep ? `run ${rep}` : 'warm-up'}: ${r.tokens} tokens, ${fmt(r.seconds, 3)} s${side === 'theirs' ? ` (tokenize ${fmt(r.tokenize, 3)} s, forward+read-back ${fmt(r.forward, 3)} s)` : ` (wall ${fmt(r.wall, 3)} s)`}`);
      if (rep) res[side].push(r);
      else warm[side] = r.seconds;
    }
  }
  // Tokens/s over the note's content tokens (n-2; both sides run one sequence of n tokens with
  // [CLS] and [SEP]): ours reports n-2 (analysis.tokens), transformers.js's input_ids has n.
  const o = res.ours.length ? median(res.ours.map((r) => r.seconds)) : null;
  const t = res.theirs.length ? median(res.theirs.map((r) => r.seconds)) : null;
  const tf = res.theirs.length ? median(res.theirs.map((r) => r.forward)) : null;
  const oursTokens = res.ours[0]?.tokens, theirsTokens = res.theirs[0]?.tokens;
  if (oursTokens != null && oursTokens !== n - 2) console.log(`warning: ours counted ${oursTokens} content tokens, expected ${n - 2}`);
  if (theirsTokens != null && theirsTokens !== n) console.log(`warning: transformers.js has ${theirsTokens} input ids, expected ${n}`);
  const content = n - 2;
  rows.push({ n, ours: o && content / o, theirs: t && content / t, theirsFwd: tf && content / tf, oursS: o, theirsS: t, warm, err, oursTokens, theirsTokens });
}

// The long case: each side in its own fresh page (a failure or hang of one cannot spoil the other).
let long = null;
if (LONG) {
  const text = texts[String(LONG)];
  long = { n: LONG };
  for (const side of ['ours', 'theirs']) {
    if (side === 'theirs' && !theirsLoad) { long.theirs = { ok: false, error: `not loaded: ${theirsLoadError}` }; continue; }
    let pg;
    try {
      pg = await openPage();
      await call(pg, side === 'ours' ? 'loadOurs' : 'loadTheirs', side === 'ours' ? undefined : THEIRS_DEVICE);
    } catch (e) {
      long[side] = { ok: false, error: `load: ${e.message.split('\n')[0]}` };
      continue;
    }
    console.log(`${stamp()} ${LONG}: ${side} starting (one run, no warm-up at this length)`);
    const r = await measure(pg, side, text, LONG_TIMEOUT);
    long[side] = r;
    console.log(`${stamp()} ${LONG}: ${side}: ${r.ok ? `${r.tokens} tokens in ${fmt(r.seconds, 2)} s` : `FAILED: ${r.error}`}`);
    if (!r.ok) logs.slice(-10).forEach((l) => console.log(`   ${l}`));
    await pg.close().catch(() => {});
  }
}

await browser.close().catch(() => {});
server.close();

// ---- report ----------------------------------------------------------------------------------
const onnxBytes = statSync(join(MODEL, 'onnx/model.onnx')).size;
const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8'));
let cpu = os.cpus()[0]?.model || 'unknown CPU';
let gitRev = '';
try { gitRev = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).toString().trim(); } catch {}
const tfjsVersion = JSON.parse(readFileSync(join(HERE, 'node_modules/@huggingface/transformers/package.json'), 'utf8')).version;
const ortVersion = JSON.parse(readFileSync(join(HERE, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
const lines = [];
lines.push('# Browser benchmark: ours vs transformers.js (WebGPU)', '');
lines.push(`- Date: ${new Date().toISOString()}; repo ${gitRev || '?'}; \`node bench/browser/run.mjs ${argv.join(' ')}\``.trimEnd());
lines.push(`- Machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, no GPU`);
lines.push(`- Browser: Chromium ${chromiumVersion}, headless (\`${ARGS.join(' ')}\`)`);
lines.push(`- WebGPU adapter: ${[adapter.vendor, adapter.architecture, adapter.device, adapter.description].filter(Boolean).join(' / ') || JSON.stringify(adapter)} (maxBufferSize ${adapter.maxBufferSize}, maxStorageBufferBindingSize ${adapter.maxStorageBufferBindingSize}); ours reports backend \`${oursLoad.info.backend}\`, adapter \`${oursLoad.info.adapter}\``);
lines.push('- **SwiftShader is a CPU implementation of Vulkan/WebGPU: these numbers are a relative measure of the two runtimes on the same software GPU only, not of real-GPU speed.**');
lines.push(`- Model: random weights (make_model.py), ModernBertForTokenClassification, ${cfg.num_hidden_layers} layers, hidden ${cfg.hidden_size}, ${cfg.num_attention_heads} heads, intermediate ${cfg.intermediate_size}, global attention every ${cfg.global_attn_every_n_layers} layers, local window ${cfg.local_attention}, context ${cfg.max_position_embeddings}, vocab ${cfg.vocab_size}, ${Object.keys(cfg.id2label).length} labels; float32; ONNX ${(onnxBytes / 2 ** 20).toFixed(1)} MiB`);
lines.push(`- Ours: web/dist (wasm), \`DeidModel.load(files, "gpu")\`, \`analyze(text)\`; time = \`analysis.seconds\` (tokenization, forward, read-back, softmax). Load ${fmt(oursLoad.seconds, 2)} s.`);
lines.push(`- transformers.js ${tfjsVersion} (onnxruntime-web ${ortVersion}), \`AutoModelForTokenClassification.from_pretrained(local, {device: "${THEIRS_DEVICE}", dtype: "fp32"})\`; time = tokenizer + forward + logits read-back. ${theirsLoad ? `Load ${fmt(theirsLoad.seconds, 2)} s.` : `Load FAILED: ${theirsLoadError}`}`);
lines.push(`- Each length: one warm-up per side, then ${REPS} runs interleaved (ours, theirs, ours, …); median. Tokens/s = content tokens (N-2, without [CLS]/[SEP]) / seconds; both sides run one sequence of N tokens.`);
lines.push('');
lines.push(`| seq (tokens) | ours tok/s | transformers.js tok/s | ratio (ours / transformers.js) | ours s | transformers.js s | transformers.js forward-only tok/s | warm-up s (ours / transformers.js) |`);
lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const ratio = r.ours && r.theirs ? `${fmt(r.ours / r.theirs, 2)}×` : '—';
  const o = r.err.ours ? `failed: ${r.err.ours}` : fmt(r.ours);
  const t = r.err.theirs ? `failed: ${r.err.theirs}` : (theirsLoad ? fmt(r.theirs) : 'not loaded');
  lines.push(`| ${r.n} | ${o} | ${t} | ${ratio} | ${fmt(r.oursS, 3)} | ${fmt(r.theirsS, 3)} | ${fmt(r.theirsFwd)} | ${fmt(r.warm.ours, 2)} / ${fmt(r.warm.theirs, 2)} |`);
}
if (long) {
  lines.push('', `## ${long.n} tokens (one sequence, one run each, fresh page, no warm-up at this length)`, '');
  lines.push('| side | result |', '|---|---|');
  for (const side of ['ours', 'theirs']) {
    const r = long[side];
    const name = side === 'ours' ? 'ours' : 'transformers.js';
    lines.push(`| ${name} | ${r.ok ? `finished: ${r.tokens} tokens in ${fmt(r.seconds, 2)} s = ${fmt((long.n - 2) / r.seconds)} tok/s` : `FAILED: ${r.error}`} |`);
  }
  if (long.ours?.ok && long.theirs?.ok) lines.push('', `Ratio at ${long.n}: ${fmt(long.theirs.seconds / long.ours.seconds, 2)}× (ours / transformers.js tok/s).`);
  lines.push('', `Ours runs ${long.n - 2} content tokens as one window of ${long.n} (the pipeline's window is the context minus [CLS]/[SEP] = ${cfg.max_position_embeddings - 2} tokens, so no windowing happens at or below ${cfg.max_position_embeddings} tokens).`);
}
const external = served.filter((u) => !/^\/(ours|model|page|tfjs|ort)\/|^\/$|^\/favicon/.test(u));
if (external.length) lines.push('', `Unexpected requests: ${[...new Set(external)].join(', ')}`);
const md = lines.join('\n') + '\n';
writeFileSync(OUT, md);
console.log('\n' + md);
console.log(`written to ${OUT}`);
