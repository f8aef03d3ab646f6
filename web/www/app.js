// The page: fetches the model folder (the only network use), hands the bytes to the wasm module
// (the `web` crate over `runtime`), and renders what it returns. No model logic lives here.
import init, { DeidModel, defaultThreshold } from './pkg/web.js';

const REQUIRED = ['config.json', 'model.safetensors', 'tokenizer.json'];
const OPTIONAL = ['tokenizer_config.json', 'special_tokens_map.json'];
// The bundled demo model, served next to the page by `runtime-cli serve-web` (see README).
const DEFAULT_MODEL = 'models/deid/';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const device = params.get('device') || 'auto';

let model = null;      // DeidModel
let info = null;       // its description
let current = null;    // the Analysis shown
let resolveReady, rejectReady;
window.modelReady = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
window.modelReady.catch(() => {});

function status(text, kind = '') {
  const s = $('model-status');
  s.textContent = text;
  s.className = kind;
}

function mib(bytes) { return (bytes / 1048576).toFixed(1) + ' MiB'; }

async function fetchBytes(url, onProgress) {
  const r = await fetch(url);
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

async function fetchFolder(base) {
  const root = new URL(base.endsWith('/') ? base : base + '/', location.href);
  const files = new Map();
  const bar = $('model-progress');
  bar.hidden = false;
  for (const name of REQUIRED) {
    files.set(name, await fetchBytes(new URL(name, root), (got, total) => {
      status(`Downloading ${name}: ${mib(got)}${total ? ' of ' + mib(total) : ''}`);
      if (total) { bar.max = total; bar.value = got; } else { bar.removeAttribute('value'); }
    }));
  }
  for (const name of OPTIONAL) {
    const r = await fetch(new URL(name, root)).catch(() => null);
    if (r && r.ok) files.set(name, new Uint8Array(await r.arrayBuffer()));
  }
  bar.hidden = true;
  return files;
}

async function filesFromList(list) {
  const files = new Map();
  for (const f of list) {
    const name = f.name;
    if (REQUIRED.includes(name) || OPTIONAL.includes(name)) files.set(name, new Uint8Array(await f.arrayBuffer()));
  }
  const missing = REQUIRED.filter((n) => !files.has(n));
  if (missing.length) throw new Error(`the chosen folder has no ${missing.join(', ')}`);
  return files;
}

// Every file under a dropped directory entry.
function entryFiles(entry) {
  if (entry.isFile) return new Promise((res, rej) => entry.file((f) => res([f]), rej));
  const reader = entry.createReader();
  return new Promise((res, rej) => {
    const all = [];
    const next = () => reader.readEntries(async (batch) => {
      if (!batch.length) return res((await Promise.all(all.map(entryFiles))).flat());
      all.push(...batch);
      next();
    }, rej);
    next();
  });
}

async function load(files, name) {
  $('run').disabled = true;
  status(`Starting the model (${name})…`);
  let dev = device;
  if (dev === 'auto' && !navigator.gpu) {
    dev = 'cpu';
    showDeviceNote('This browser does not offer WebGPU, so the model runs on the CPU (compiled to WebAssembly): correct, but slower.');
  }
  const m = await DeidModel.load(files, dev);
  model = m;
  info = JSON.parse(m.info());
  if (info.fallback) showDeviceNote(`${info.fallback}. Results are the same; it is slower.`);
  $('info-name').textContent = name;
  $('info-params').textContent = `${(info.parameters / 1e6).toFixed(info.parameters < 1e7 ? 2 : 0)} M (${info.layers} layers, hidden ${info.hidden_size}, context ${info.context} tokens)`;
  $('info-labels').textContent = info.categories.join(', ');
  $('info-device').textContent = info.backend === 'cpu' ? 'CPU (WebAssembly)' : `WebGPU${info.adapter ? ': ' + info.adapter : ' (the browser does not name the adapter)'}`;
  $('model-info').hidden = false;
  lockNetwork();
  status('Model ready. Nothing you paste is sent anywhere.');
  $('run').disabled = false;
  buildLegend();
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
    return JSON.parse(a.result(opts.threshold ?? defaultThreshold(), Boolean(opts.surrogate)));
  } finally {
    a.free();
  }
};

function render() {
  if (!current) return;
  const { text, analysis } = current;
  const result = JSON.parse(analysis.result(threshold(), surrogate()));
  const cps = Array.from(text);  // span offsets count code points
  const box = $('highlighted');
  const nodes = [];
  let last = 0;
  for (const s of result.spans) {
    if (s.start > last) nodes.push(document.createTextNode(cps.slice(last, s.start).join('')));
    const mark = document.createElement('mark');
    mark.className = `c${info.categories.indexOf(s.label) % 8}`;
    mark.title = `${s.label} (${(s.score * 100).toFixed(0)}%)`;
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
  $('timing').textContent = `${result.spans.length} PHI spans · ${analysis.tokens} tokens in ${analysis.seconds.toFixed(2)} s (${rate} tokens/s) on ${info.backend === 'cpu' ? 'the CPU' : 'WebGPU'}`;
}

async function run() {
  const text = $('note').value;
  if (!text.trim()) { $('timing').textContent = 'Paste or drop a note first.'; return; }
  $('run').disabled = true;
  $('timing').textContent = 'Running…';
  try {
    const analysis = await model.analyze(text);
    if (current) current.analysis.free();
    current = { text, analysis };
    render();
  } catch (e) {
    $('timing').textContent = `Error: ${e.message || e}`;
  } finally {
    $('run').disabled = false;
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
  const note = $('note');
  note.addEventListener('dragover', (e) => { e.preventDefault(); note.classList.add('dragover'); });
  note.addEventListener('dragleave', () => note.classList.remove('dragover'));
  note.addEventListener('drop', async (e) => {
    e.preventDefault();
    note.classList.remove('dragover');
    const f = e.dataTransfer.files[0];
    if (f) note.value = await f.text();
  });
  $('folder').addEventListener('change', async (e) => {
    try {
      const list = [...e.target.files];
      const name = (list[0]?.webkitRelativePath || '').split('/')[0] || 'local folder';
      await load(await filesFromList(list), name);
      resolveReady();
    } catch (err) { status(`Cannot load the folder: ${err.message || err}`, 'error'); }
  });
  const section = $('model');
  section.addEventListener('dragover', (e) => e.preventDefault());
  section.addEventListener('drop', async (e) => {
    e.preventDefault();
    try {
      const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry()).filter(Boolean);
      const files = (await Promise.all(entries.map(entryFiles))).flat();
      await load(await filesFromList(files), entries[0]?.name || 'dropped folder');
      resolveReady();
    } catch (err) { status(`Cannot load the dropped folder: ${err.message || err}`, 'error'); }
  });
}

async function main() {
  await init();
  wire();
  const url = params.get('model') || DEFAULT_MODEL;
  try {
    const files = await fetchFolder(url);
    await load(files, url.replace(/\/$/, '').split('/').pop() || url);
    resolveReady();
  } catch (e) {
    const hint = params.get('model') ? '' : ' Pick a model folder below, or open this page with ?model=<URL of a model folder>.';
    status(`Cannot load the model from ${url}: ${e.message || e}.${hint}`, 'error');
    // A model asked for in the URL failed: say so to automation. Without one, wait for a folder.
    if (params.get('model')) rejectReady(e);
  }
}

main();
