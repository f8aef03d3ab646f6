// In-browser benchmark: our ModernBERT runtime (web/dist, wasm) against transformers.js
// (@huggingface/transformers, ONNX Runtime Web) in headless Chromium, on the same random-weight
// model (bench/browser/make_model.py) and the same texts, for two pairs: WebGPU against WebGPU
// (ours: DeidModel on "gpu"; theirs: the WebGPU execution provider) and the CPU in wasm (ours:
// DeidModel on "cpu", the CPU backend compiled to wasm with SIMD128; theirs: ONNX Runtime's wasm
// backend, SIMD and threads).
//
//   node bench/browser/run.mjs [--model /tmp/bench-browser/model] [--pairs webgpu,wasm]
//        [--lengths 128,512,2048] [--long 8192] [--reps 3] [--protocol apart|together] [--warm 3]
//        [--settle-ms 0] [--timeout 600]
//        [--long-timeout 900] [--out bench/browser/latest.md]
//
// Serves web/dist, the model folder, this folder's page/ and node_modules (transformers.js and
// onnxruntime-web) from a local static server; nothing else is fetched. Environment: CHROMIUM
// (default /usr/bin/chromium).
import { statSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import os from 'node:os';
import { HERE, REPO, startHarness, browserPeakMiB } from './harness.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt; };
const MODEL = resolve(opt('model', '/tmp/bench-browser/model'));
const PAIRS = opt('pairs', 'webgpu,wasm').split(',').filter(Boolean);
const LENGTHS = opt('lengths', '128,512,2048').split(',').filter(Boolean).map(Number);
const LONG = Number(opt('long', '8192')); // 0: skip the long case
const REPS = Number(opt('reps', '3'));
const TIMEOUT = Number(opt('timeout', '600')) * 1000; // per call
const LONG_TIMEOUT = Number(opt('long-timeout', '900')) * 1000; // the long case's one run, per side
const OUT = resolve(opt('out', join(HERE, 'latest.md')));
// An idle pause before every timed call (README: worker threads that spin after their work, and
// calls that run cold after a pause); 0, back to back, by default.
const SETTLE_MS = Number(opt('settle-ms', '0'));
// Untimed calls after the first call at each length, before the timed runs: the browser compiles
// hot wasm functions again, optimised, after some calls (V8's tiering); ONNX Runtime's reached its
// speed only after 4 or 5 calls at 2,048 tokens.
const WARM = Number(opt('warm', '3'));
// apart (default): each side alone in its own fresh browser; together: both in one page,
// interleaved call by call (README: on the CPU pair each side's threads then slow the other).
const PROTOCOL = opt('protocol', 'apart');
if (!['apart', 'together'].includes(PROTOCOL)) throw new Error(`--protocol ${PROTOCOL}: expected apart or together`);

// Each pair: the device ours loads on, the one transformers.js loads on.
const PAIR = {
  webgpu: { ours: 'gpu', theirs: 'webgpu', title: 'WebGPU vs WebGPU' },
  wasm: { ours: 'cpu', theirs: 'wasm', title: 'CPU in wasm vs wasm' },
};
for (const p of PAIRS) if (!PAIR[p]) throw new Error(`--pairs ${p}: expected webgpu or wasm`);
if (!existsSync(join(MODEL, 'onnx/model.onnx'))) throw new Error(`${MODEL}: no onnx/model.onnx; run python3 bench/browser/make_model.py first`);
if (!existsSync(join(REPO, 'web/dist/pkg/web_bg.wasm'))) throw new Error('web/dist/pkg is not built (web/build.sh)');

const { ARGS, chromiumVersion, logs, served, openPage, call, close, relaunch } = await startHarness({ model: MODEL, timeout: TIMEOUT });

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const fmt = (x, d = 1) => (x == null || !isFinite(x) ? '—' : x.toFixed(d));
const T0 = Date.now();
const stamp = () => `[${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s]`;

// One measurement; {ok, tokens, seconds, ...} or {ok: false, error}.
async function measure(pg, side, text, ms = TIMEOUT) {
  if (SETTLE_MS) await new Promise((r) => setTimeout(r, SETTLE_MS));
  try {
    const r = await call(pg, side === 'ours' ? 'runOurs' : 'runTheirs', text, ms);
    return { ok: true, ...r };
  } catch (e) {
    return { ok: false, error: e.message.split('\n')[0].slice(0, 300) };
  }
}

// Load one side in the page; {seconds, info?} or {error}.
async function load(pg, side, pair) {
  try {
    return await call(pg, side === 'ours' ? 'loadOurs' : 'loadTheirs', PAIR[pair][side]);
  } catch (e) {
    console.log(`${stamp()} ${pair}: ${side} failed to load: ${e.message}\n${logs.slice(-20).join('\n')}`);
    return { error: e.message.split('\n')[0] };
  }
}

// Each length for these sides, on one page: the first call (pipelines/shaders for the shape),
// WARM untimed calls, then REPS runs, the sides interleaved; per side and length {first, runs: [...], err}.
async function lengths(page, pair, sides) {
  const out = Object.fromEntries(sides.map((side) => [side, {}]));
  for (const n of LENGTHS) {
    const text = texts[String(n)];
    if (!text) throw new Error(`texts.json has no text for ${n} tokens (make_model.py --lengths)`);
    for (const side of sides) out[side][n] = { runs: [] };
    for (let rep = 0; rep <= REPS; rep++) {
      for (const side of sides) {
        const cell = out[side][n];
        if (cell.err) continue;
        for (let w = 0; rep === 1 && w < WARM && !cell.err; w++) {
          const u = await measure(page, side, text);
          if (!u.ok) cell.err = u.error;
        }
        const r = cell.err ? { ok: false, error: cell.err } : await measure(page, side, text);
        if (!r.ok) { cell.err = r.error; console.log(`${stamp()} ${pair} ${n}: ${side} failed: ${r.error}`); continue; }
        console.log(`${stamp()} ${pair} ${n}: ${side} ${rep ? `run ${rep}` : 'first call'}: ${r.tokens} tokens, ${fmt(r.seconds, 3)} s`);
        if (rep) cell.runs.push(r);
        else cell.first = r.seconds;
      }
    }
  }
  return out;
}

let adapter = null, texts = null;
const results = {};
for (const pair of PAIRS) {
  // apart: each side alone in a fresh browser (loaded, then every length); together: both
  // loaded in one page, interleaved call by call.
  const loaded = {}, cells = {};
  for (const sides of PROTOCOL === 'together' ? [['ours', 'theirs']] : [['ours'], ['theirs']]) {
    await relaunch();
    const page = await openPage();
    adapter ??= await call(page, 'adapterInfo');
    texts ??= await call(page, 'texts');
    for (const side of sides) loaded[side] = await load(page, side, pair);
    const live = sides.filter((side) => !loaded[side].error);
    Object.assign(cells, await lengths(page, pair, live));
    await page.close().catch(() => {});
  }
  console.log(`${stamp()} ${pair}: ours loaded in ${fmt(loaded.ours.seconds, 2)} s ${JSON.stringify(loaded.ours.info ?? loaded.ours.error)}; transformers.js in ${fmt(loaded.theirs.seconds, 2)} s (threads ${loaded.theirs.threads ?? '—'})`);
  if (pair === 'webgpu' && loaded.ours.info && !/webgpu|wgpu|gpu/i.test(loaded.ours.info.backend)) console.log(`warning: ours runs on ${loaded.ours.info.backend}`);
  const rows = [];
  for (const n of LENGTHS) {
    const res = { ours: cells.ours?.[n]?.runs ?? [], theirs: cells.theirs?.[n]?.runs ?? [] };
    const first = { ours: cells.ours?.[n]?.first, theirs: cells.theirs?.[n]?.first };
    const err = { ours: cells.ours?.[n]?.err, theirs: cells.theirs?.[n]?.err };
    // Tokens/s over the note's content tokens (n-2; both sides run one sequence of n tokens with
    // [CLS] and [SEP]): ours reports n-2 (analysis.tokens), transformers.js's input_ids has n.
    const o = res.ours.length ? median(res.ours.map((r) => r.seconds)) : null;
    const t = res.theirs.length ? median(res.theirs.map((r) => r.seconds)) : null;
    const oursTokens = res.ours[0]?.tokens, theirsTokens = res.theirs[0]?.tokens;
    if (oursTokens != null && oursTokens !== n - 2) console.log(`warning: ours counted ${oursTokens} content tokens, expected ${n - 2}`);
    if (theirsTokens != null && theirsTokens !== n) console.log(`warning: transformers.js has ${theirsTokens} input ids, expected ${n}`);
    rows.push({ n, ours: o && (n - 2) / o, theirs: t && (n - 2) / t, oursS: o, theirsS: t, first, err });
  }

  // The long case and the memory: each side alone in a fresh browser (a failure or hang of one
  // cannot spoil the other, and the peak is that side's own).
  const long = {};
  for (const side of ['ours', 'theirs']) {
    if (!LONG) break;
    await relaunch();
    const pg = await openPage();
    const l = await load(pg, side, pair);
    if (l.error) { long[side] = { ok: false, error: `load: ${l.error}` }; continue; }
    console.log(`${stamp()} ${pair} ${LONG}: ${side} starting (one run, no warm-up at this length)`);
    const r = await measure(pg, side, texts[String(LONG)], LONG_TIMEOUT);
    long[side] = { ...r, peakMiB: browserPeakMiB() };
    console.log(`${stamp()} ${pair} ${LONG}: ${side}: ${r.ok ? `${r.tokens} tokens in ${fmt(r.seconds, 2)} s` : `FAILED: ${r.error}`}; browser peak ${fmt(long[side].peakMiB, 0)} MiB`);
    if (!r.ok) logs.slice(-10).forEach((line) => console.log(`   ${line}`));
    await pg.close().catch(() => {});
  }
  results[pair] = { loaded, rows, long };
}
await close();

// ---- report ----------------------------------------------------------------------------------
const onnxBytes = statSync(join(MODEL, 'onnx/model.onnx')).size;
const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8'));
const cpu = os.cpus()[0]?.model || 'unknown CPU';
let gitRev = '';
try {
  gitRev = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).toString().trim();
  if (execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--untracked-files=no']).toString().trim()) gitRev += ' with uncommitted changes';
} catch {}
const tfjsVersion = JSON.parse(readFileSync(join(HERE, 'node_modules/@huggingface/transformers/package.json'), 'utf8')).version;
const ortVersion = JSON.parse(readFileSync(join(HERE, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
const ratio = (a, b) => (a && b ? `${fmt(a / b, 2)}×` : '—');
const lines = [];
lines.push('# Browser benchmark: ours vs transformers.js (WebGPU and CPU/wasm)', '');
lines.push(`- Date: ${new Date().toISOString()}; repo ${gitRev || '?'}; \`node bench/browser/run.mjs ${argv.join(' ')}\``.trimEnd());
lines.push(`- Machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, no GPU`);
lines.push(`- Browser: Chromium ${chromiumVersion}, headless (\`${ARGS.join(' ')}\`), cross-origin isolated (COOP/COEP)`);
lines.push(`- WebGPU adapter: ${[adapter.vendor, adapter.architecture, adapter.device, adapter.description].filter(Boolean).join(' / ') || JSON.stringify(adapter)} (maxBufferSize ${adapter.maxBufferSize}, maxStorageBufferBindingSize ${adapter.maxStorageBufferBindingSize})`);
lines.push('- **SwiftShader is a CPU implementation of Vulkan/WebGPU: the WebGPU numbers are a relative measure of the two runtimes on the same software GPU only, not of real-GPU speed.**');
lines.push(`- Model: random weights (make_model.py), ModernBertForTokenClassification, ${cfg.num_hidden_layers} layers, hidden ${cfg.hidden_size}, ${cfg.num_attention_heads} heads, intermediate ${cfg.intermediate_size}, global attention every ${cfg.global_attn_every_n_layers} layers, local window ${cfg.local_attention}, context ${cfg.max_position_embeddings}, vocab ${cfg.vocab_size}, ${Object.keys(cfg.id2label).length} labels; float32; ONNX ${(onnxBytes / 2 ** 20).toFixed(1)} MiB`);
const oursThreads = results.wasm?.loaded.ours.info?.threads;
lines.push(`- Ours: web/dist (wasm, SIMD128), the page's \`loadModel(files, "gpu" | "cpu")\` (web/www/model.js), \`analyze(text)\`; time = seconds on the page around \`analyze\` (tokenization, forward, read-back, softmax; on the CPU, the worker's messages too).${oursThreads ? ` The CPU path: the threaded build in a worker, ${oursThreads} threads.` : ''}`);
lines.push(`- transformers.js ${tfjsVersion} (onnxruntime-web ${ortVersion}), \`AutoModelForTokenClassification.from_pretrained(local, {device: "webgpu" | "wasm", dtype: "fp32"})\`, wasm with SIMD and \`numThreads\` = the machine's cores; time = tokenizer + forward + logits read-back.`);
lines.push(PROTOCOL === 'together'
  ? `- Protocol \`together\`: per pair both sides loaded in one page; each length: a first call per side (it compiles what the new length needs), then ${REPS} runs interleaved (ours, theirs, ours, …)`
  : `- Protocol \`apart\`: per pair each side alone in a fresh browser (as a page has one runtime; loaded in the same page, each side's idle worker threads slowed the other's calls, see README); after the load, each length: a first call (it compiles what the new length needs), then ${REPS} runs`);
lines[lines.length - 1] += `${WARM ? ` after ${WARM} untimed call${WARM === 1 ? '' : 's'} (the browser re-optimises hot wasm after some calls)` : ''}${SETTLE_MS ? `, each after an idle pause of ${SETTLE_MS} ms` : ''}; median. Tokens/s = content tokens (N-2, without [CLS]/[SEP]) / seconds; both sides run one sequence of N tokens.`;
lines.push(PROTOCOL === 'together'
  ? '- Ours compiles its GPU pipelines during its load, asynchronously (runtime::model::warm); transformers.js loads between our load and the first calls, so our first call at the first length finds them compiled. Called right after its own load, our first call includes the rest of that compilation: profile.mjs measures that case (profile-page-gpu.md).'
  : '- Ours compiles its GPU pipelines during its load, asynchronously (runtime::model::warm): the first call at the first length, right after the load, includes whatever of that compilation is left.');
lines.push(`- Load: from fetching the model files from the local server to a model ready to run (ours: the wasm module, parsing, upload; theirs: tokenizer, ONNX session). Peak memory: resident memory (VmHWM) of all the browser's processes (browser, GPU process, renderer), each side alone in a fresh browser, after loading and the ${LONG || 'no'}-token run.`);
for (const pair of PAIRS) {
  const { loaded, rows, long } = results[pair];
  lines.push('', `## ${PAIR[pair].title}`, '');
  lines.push(`Load: ours ${loaded.ours.error ? `FAILED: ${loaded.ours.error}` : `${fmt(loaded.ours.seconds, 2)} s (${loaded.ours.info?.backend}, ${loaded.ours.info?.precision})`}, transformers.js ${loaded.theirs.error ? `FAILED: ${loaded.theirs.error}` : `${fmt(loaded.theirs.seconds, 2)} s`}; ratio ${ratio(loaded.theirs.seconds, loaded.ours.seconds)} (theirs / ours).`, '');
  lines.push('| seq (tokens) | ours tok/s | transformers.js tok/s | ratio (ours / theirs) | ours s | transformers.js s | first call s (ours / theirs) |');
  lines.push('|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const o = r.err.ours ? `failed: ${r.err.ours}` : fmt(r.ours);
    const t = r.err.theirs ? `failed: ${r.err.theirs}` : (loaded.theirs.error ? 'not loaded' : fmt(r.theirs));
    lines.push(`| ${r.n} | ${o} | ${t} | ${ratio(r.ours, r.theirs)} | ${fmt(r.oursS, 3)} | ${fmt(r.theirsS, 3)} | ${fmt(r.first.ours, 2)} / ${fmt(r.first.theirs, 2)} |`);
  }
  if (LONG) {
    const cell = (r) => (r?.ok ? `${fmt((LONG - 2) / r.seconds)} tok/s (${fmt(r.seconds, 2)} s, first call)` : `FAILED: ${r?.error}`);
    const ok = long.ours?.ok && long.theirs?.ok;
    lines.push(`| ${LONG} | ${cell(long.ours)} | ${cell(long.theirs)} | ${ok ? ratio(long.theirs.seconds, long.ours.seconds) : '—'} | | | |`);
    lines.push('', `Peak memory of the browser (MiB): ours ${fmt(long.ours?.peakMiB, 0)}, transformers.js ${fmt(long.theirs?.peakMiB, 0)}.`);
  }
}
if (LONG) lines.push('', `At ${LONG} tokens each side runs once in a fresh browser, so that time includes the first-call cost. Ours runs ${LONG - 2} content tokens as one window of ${LONG} (the pipeline's window is the context minus [CLS]/[SEP] = ${cfg.max_position_embeddings - 2} tokens).`);
const external = served.filter((u) => !/^\/(ours|model|page|tfjs|ort)\/|^\/$|^\/favicon/.test(u));
if (external.length) lines.push('', `Unexpected requests: ${[...new Set(external)].join(', ')}`);
const md = lines.join('\n') + '\n';
writeFileSync(OUT, md);
console.log('\n' + md);
console.log(`written to ${OUT}`);
