// The page: fetches the model folder (the only network use), hands the bytes to the wasm module
// (the `web` crate over `runtime`, through model.js: on this thread, or on the CPU worker's
// threads), and renders what it returns. No model logic lives here.
import { start, loadModel, defaultThreshold } from './model.js';

// A folder needs config.json, one of each group (the first present is used), and may have the
// optional files. ModernBERT and classic BERT folders alike (BERT uploads often ship
// pytorch_model.bin and vocab.txt instead of model.safetensors and tokenizer.json).
const REQUIRED = ['config.json'];
const GROUPS = [
  { what: 'weights', names: ['model.safetensors', 'pytorch_model.bin'] },
  { what: 'tokenizer', names: ['tokenizer.json', 'vocab.txt', 'vocab.json'] },
];
const OPTIONAL = ['tokenizer_config.json', 'special_tokens_map.json', 'merges.txt'];
const KNOWN = [...REQUIRED, ...GROUPS.flatMap((g) => g.names), ...OPTIONAL];
const missingOf = (files) => [
  ...REQUIRED.filter((n) => !files.has(n)),
  ...GROUPS.filter((g) => !g.names.some((n) => files.has(n))).map((g) => `${g.what} (${g.names.join(' or ')})`),
];
// The bundled demo model, served next to the page by `runtime-cli serve-web` (see README).
const DEFAULT_MODEL = 'models/deid/';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const device = params.get('device') || 'auto';
// The CPU path's threads (?threads=N, at most the cores; default every core, where the page is
// cross-origin isolated).
const cores = navigator.hardwareConcurrency || 1;
const threads = Math.min(cores, Math.max(1, Math.floor(Number(params.get('threads'))) || cores));

let model = null;      // the loaded model (model.js)
let info = null;       // its description
let current = null;    // the Analysis shown
let loads = 0;          // the latest load wins; older ones are discarded
let runs = 0;           // likewise for runs
let ready = 'pending';  // what window.modelReady says
let resolveReady, rejectReady;
window.modelReady = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
window.modelReady.catch(() => {});

function markReady() {
  if (ready === 'rejected') window.modelReady = Promise.resolve();
  else resolveReady();
  ready = 'resolved';
}
function markFailed(e) {
  if (ready !== 'pending') return;
  ready = 'rejected';
  rejectReady(e);
}

function status(text, kind = '') {
  const s = $('model-status');
  s.textContent = text;
  s.className = kind;
}

function mib(bytes) { return (bytes / 1048576).toFixed(1) + ' MiB'; }

async function fetchBytes(url, onProgress, signal) {
  const r = await fetch(url, { signal });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const total = Number(r.headers.get('content-length')) || 0;
  if (!r.body) return new Uint8Array(await r.arrayBuffer());
  const reader = r.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    onProgress(got, total);
  }
  const out = new Uint8Array(got);
  let o = 0;
  for (const c of chunks) { out.set(c, o); o += c.length; }
  return out;
}

async function fetchFolder(base, signal) {
  const root = new URL(base.endsWith('/') ? base : base + '/', location.href);
  const files = new Map();
  const bar = $('model-progress');
  bar.hidden = false;
  const download = async (name) => files.set(name, await fetchBytes(new URL(name, root), (got, total) => {
    status(`Downloading ${name}: ${mib(got)}${total ? ' of ' + mib(total) : ''}`);
    if (total) { bar.max = total; bar.value = got; } else { bar.removeAttribute('value'); }
  }, signal));
  for (const name of REQUIRED) await download(name);
  // Each group: the first file the server has.
  for (const g of GROUPS) {
    let found = false;
    for (const name of g.names) {
      const head = await fetch(new URL(name, root), { method: 'HEAD', signal }).catch(() => null);
      if (signal?.aborted) throw new DOMException('superseded', 'AbortError');
      if (head && head.ok) { await download(name); found = true; break; }
    }
    if (!found) throw new Error(`the model folder has no ${g.what} (${g.names.join(' or ')})`);
  }
  for (const name of OPTIONAL) {
    const r = await fetch(new URL(name, root), { signal }).catch(() => null);
    if (signal?.aborted) throw new DOMException('superseded', 'AbortError');
    if (r && r.ok) files.set(name, new Uint8Array(await r.arrayBuffer()));
  }
  bar.hidden = true;
  return files;
}

// The model files directly inside the chosen folder (not in its subfolders, such as a
// checkpoint-500/ or onnx/ copy). `list` holds {file, depth}: 0 for a file dropped by itself.
async function filesFromList(list) {
  const files = new Map();
  for (const { file, depth } of list) {
    const name = file.name;
    if (depth > 1) continue;
    if (!KNOWN.includes(name)) continue;
    if (files.has(name)) throw new Error(`two files named ${name}: choose one model folder`);
    files.set(name, new Uint8Array(await file.arrayBuffer()));
  }
  const missing = missingOf(files);
  if (missing.length) throw new Error(`the chosen folder has no ${missing.join(', ')}`);
  return files;
}

function entryFile(entry) {
  return new Promise((res, rej) => entry.file(res, rej));
}

// A dropped file ({file, depth: 0}), or the files directly inside a dropped folder (depth 1).
async function droppedFiles(entry) {
  if (entry.isFile) return [{ file: await entryFile(entry), depth: 0 }];
  const reader = entry.createReader();
  const children = [];
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    children.push(...batch);
  }
  return Promise.all(children.filter((c) => c.isFile).map(async (c) => ({ file: await entryFile(c), depth: 1 })));
}

// Load a model from its files; `ticket` is this load's number (a newer load makes it moot).
async function load(files, name, ticket) {
  $('run').disabled = true;
  status(`Starting the model (${name})…`);
  let dev = device;
  if (dev === 'auto' && !navigator.gpu) {
    dev = 'cpu';
    showDeviceNote('This browser does not offer WebGPU, so the model runs on the CPU (compiled to WebAssembly): correct, but slower.');
  }
  let m;
  try {
    m = await loadModel(files, dev, { threads });
  } finally {
    $('run').disabled = !model;
  }
  if (ticket !== loads) { m.free(); return false; }
  const old = model;
  model = m;
  old?.free();  // analyses under way keep what they need
  if (current) { current.analysis.free(); current = null; }
  $('output').hidden = true;
  $('timing').textContent = '';
  info = m.info;
  if (info.fallback) showDeviceNote(`${info.fallback}. Results are the same; it is slower.`);
  $('info-name').textContent = name;
  $('info-params').textContent = `${(info.parameters / 1e6).toFixed(info.parameters < 1e7 ? 2 : 0)} M (${info.layers} layers, hidden ${info.hidden_size}, context ${info.context} tokens)`;
  $('info-labels').textContent = info.categories.join(', ');
  $('info-device').textContent = info.backend === 'cpu' ? `CPU (WebAssembly, ${info.threads > 1 ? `${info.threads} threads` : 'one thread'})` : `WebGPU${info.adapter ? ': ' + info.adapter : ' (the browser does not name the adapter)'}`;
  $('model-info').hidden = false;
  lockNetwork();
  status('Model ready. Nothing you paste is sent anywhere.');
  $('run').disabled = false;
  buildLegend();
  markReady();
  return true;
}

// After the model is loaded the page needs the network no more: a second policy (policies only
// ever tighten) makes the browser refuse any fetch from now on.
function lockNetwork() {
  if ($('csp-lock')) return;
  const m = document.createElement('meta');
  m.id = 'csp-lock';
  m.httpEquiv = 'Content-Security-Policy';
  m.content = "connect-src 'none'";
  document.head.append(m);
}

function showDeviceNote(text) {
  const n = $('device-note');
  n.textContent = text;
  n.hidden = false;
}

function buildLegend() {
  const legend = $('legend');
  legend.replaceChildren(...info.categories.map((c, i) => {
    const li = document.createElement('li');
    li.className = `c${i % 8}`;
    li.textContent = c;
    return li;
  }));
}

function threshold() { return Number($('threshold').value); }
function surrogate() { return $('mode').value === 'surrogates'; }

// The programmatic entry point: spans and redacted text, as `runtime-cli deid` gives them.
window.deid = async (text, opts = {}) => {
  await window.modelReady;
  const a = await model.analyze(String(text));
  try {
    return await a.result(opts.threshold ?? defaultThreshold(), Boolean(opts.surrogate));
  } finally {
    a.free();
  }
};

let renders = 0;  // the latest render wins (the slider moves while a result is decoded)
async function render() {
  if (!current) return;
  const ticket = ++renders;
  const { text, analysis } = current;
  let result;
  try {
    result = await analysis.result(threshold(), surrogate());
  } catch (e) {
    if (ticket === renders) $('timing').textContent = `Error: ${e.message || e}`;
    return;
  }
  if (ticket !== renders || current?.analysis !== analysis) return;
  const cps = Array.from(text);  // span offsets count code points
  const box = $('highlighted');
  const nodes = [];
  let last = 0;
  for (const s of result.spans) {
    if (s.start > last) nodes.push(document.createTextNode(cps.slice(last, s.start).join('')));
    const mark = document.createElement('mark');
    mark.className = `c${Math.max(0, info.categories.indexOf(s.label)) % 8}`;
    mark.title = `${s.label} (${(s.score * 100).toFixed(0)}%, ${s.source})`;
    mark.textContent = cps.slice(s.start, s.end).join('');
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = s.label;
    mark.append(tag);
    nodes.push(mark);
    last = s.end;
  }
  if (last < cps.length) nodes.push(document.createTextNode(cps.slice(last).join('')));
  box.replaceChildren(...nodes);
  $('redacted').value = result.redacted;
  $('output').hidden = false;
  const rate = analysis.seconds > 0 ? Math.round(analysis.tokens / analysis.seconds) : 0;
  $('timing').textContent = `${result.spans.length} PHI spans · ${analysis.tokens} tokens in ${analysis.seconds.toFixed(2)} s (${rate} tokens/s) on ${info.backend === 'cpu' ? `the CPU (${info.threads > 1 ? `${info.threads} threads` : 'one thread'})` : 'WebGPU'}`;
}

async function run() {
  const text = $('note').value;
  if (!text.trim()) { $('timing').textContent = 'Paste or drop a note first.'; return; }
  const ticket = ++runs;
  $('run').disabled = true;
  $('timing').textContent = 'Running…';
  // Let "Running…" paint: on the one-thread CPU path the work below blocks this thread.
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  try {
    const analysis = await model.analyze(text);
    if (ticket !== runs) { analysis.free(); return; }
    if (current) current.analysis.free();
    current = { text, analysis };
    await render();
  } catch (e) {
    if (ticket === runs) $('timing').textContent = `Error: ${e.message || e}`;
  } finally {
    if (ticket === runs) $('run').disabled = !model;
  }
}

function wire() {
  $('threshold').value = String(defaultThreshold());
  $('threshold-value').textContent = Number($('threshold').value).toFixed(2);
  $('threshold').addEventListener('input', () => { $('threshold-value').textContent = threshold().toFixed(2); render(); });
  $('mode').addEventListener('change', render);
  $('run').addEventListener('click', run);
  $('note').addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('run').disabled) run(); });
  $('copy').addEventListener('click', async () => {
    const t = $('redacted');
    try { await navigator.clipboard.writeText(t.value); } catch { t.select(); document.execCommand('copy'); }
    $('copied').textContent = 'Copied.';
    setTimeout(() => { $('copied').textContent = ''; }, 2000);
  });
  $('download').addEventListener('click', () => {
    const url = URL.createObjectURL(new Blob([$('redacted').value], { type: 'text/plain' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = 'note-redacted.txt';
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  // A file dropped anywhere else must not replace the page (and the note with it).
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
  window.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener('drop', (e) => { if (hasFiles(e)) e.preventDefault(); });
  const note = $('note');
  note.addEventListener('dragover', (e) => { if (hasFiles(e)) { e.preventDefault(); note.classList.add('dragover'); } });
  note.addEventListener('dragleave', () => note.classList.remove('dragover'));
  note.addEventListener('drop', async (e) => {
    note.classList.remove('dragover');
    if (!hasFiles(e)) return;  // dropped text goes in as usual
    e.preventDefault();
    e.stopPropagation();
    const f = e.dataTransfer.files[0];
    try {
      if (f) note.value = await f.text();
    } catch (err) {
      $('timing').textContent = `Cannot read ${f.name}: ${err.message || err}`;
    }
  });
  // A local folder replaces whatever is loading or loaded.
  const local = async (what, list, name) => {
    const ticket = ++loads;
    downloading?.abort();
    try {
      await load(await filesFromList(list), name, ticket);
    } catch (err) {
      if (ticket !== loads) return;
      status(`Cannot load the ${what}: ${err.message || err}${model ? ' (the previous model stays loaded)' : ''}`, 'error');
    }
  };
  $('folder').addEventListener('change', (e) => {
    const list = [...e.target.files].map((file) => ({ file, depth: (file.webkitRelativePath || file.name).split('/').length - 1 }));
    const name = (e.target.files[0]?.webkitRelativePath || '').split('/')[0] || 'local folder';
    local('folder', list, name);
  });
  const section = $('model');
  section.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  section.addEventListener('drop', async (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.stopPropagation();
    const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry()).filter(Boolean);
    let list;
    try {
      list = (await Promise.all(entries.map(droppedFiles))).flat();
    } catch (err) {
      status(`Cannot read the dropped folder: ${err.message || err}`, 'error');
      return;
    }
    local('dropped folder', list, entries.length === 1 && entries[0].isDirectory ? entries[0].name : 'dropped files');
  });
}

let downloading = null;  // the AbortController of the URL download, while it runs

async function main() {
  try {
    await start();
  } catch (e) {
    status(`This browser cannot start the page's WebAssembly module: ${e.message || e}`, 'error');
    markFailed(e);
    return;
  }
  wire();
  const url = params.get('model') || DEFAULT_MODEL;
  const ticket = ++loads;
  downloading = new AbortController();
  try {
    const files = await fetchFolder(url, downloading.signal);
    if (ticket !== loads) return;
    await load(files, url.replace(/\/$/, '').split('/').pop() || url, ticket);
  } catch (e) {
    if (ticket !== loads) return;  // superseded by a local folder
    const hint = params.get('model') ? '' : ' Pick a model folder below, or open this page with ?model=<URL of a model folder>.';
    status(`Cannot load the model from ${url}: ${e.message || e}.${hint}`, 'error');
    // A model asked for in the URL failed: say so to automation. Without one, wait for a folder.
    if (params.get('model')) markFailed(e);
  } finally {
    downloading = null;
    $('model-progress').hidden = true;
  }
}

main();
