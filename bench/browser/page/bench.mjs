// The benchmark page: both runtimes in one page, driven by run.mjs through window.bench.
// Ours: the page's own loader (web/dist/model.js): the `web` crate's wasm on WebGPU, or on the CPU
// in the threaded build's worker (every core; the page is cross-origin isolated). Theirs:
// transformers.js (ONNX Runtime Web: WebGPU, or wasm with threads), fp32, on the ONNX export of
// the same weights.
// Nothing is fetched from outside this server.
import { loadModel } from '/ours/model.js';
import { env, AutoTokenizer, AutoModelForTokenClassification } from '/tfjs/transformers.web.js';

const log = (s) => { document.getElementById('log').textContent += '\n' + s; };
const MODEL = '/model/';
const FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/';          // model id "model" -> /model/config.json, /model/onnx/model.onnx
env.useBrowserCache = false;
env.backends.onnx.wasm.wasmPaths = '/ort/';
env.backends.onnx.wasm.proxy = false;

let ours = null, theirs = null, tok = null;
const now = () => performance.now() / 1000;

async function adapterInfo() {
  if (!navigator.gpu) return { error: 'navigator.gpu missing' };
  const a = await navigator.gpu.requestAdapter();
  if (!a) return { error: 'no adapter' };
  const i = a.info || {};
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
    maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize };
}

window.bench = {
  adapterInfo,
  texts: async () => (await fetch(MODEL + 'texts.json')).json(),
  // `arg`: the device (gpu or cpu), or {device, threads} (the CPU pool's size; 1: one thread, on
  // the page's thread).
  async loadOurs(arg = 'gpu') {
    const { device, threads } = typeof arg === 'string' ? { device: arg } : arg;
    const t0 = now();
    const files = new Map();
    for (const name of FILES) {
      const r = await fetch(MODEL + name);
      if (r.ok) files.set(name, new Uint8Array(await r.arrayBuffer()));
      else if (name !== 'tokenizer_config.json' && name !== 'special_tokens_map.json') throw new Error(`${name}: HTTP ${r.status}`);
    }
    ours = await loadModel(files, device, threads ? { threads } : {});
    log(`ours loaded (${device})`);
    return { info: ours.info, seconds: now() - t0 };
  },
  async loadTheirs(device = 'webgpu') {
    const t0 = now();
    // ONNX Runtime's wasm backend: as many threads as the machine has cores (its default is
    // half), since the page is cross-origin isolated.
    if (device === 'wasm') env.backends.onnx.wasm.numThreads = navigator.hardwareConcurrency;
    tok = await AutoTokenizer.from_pretrained('model');
    theirs = await AutoModelForTokenClassification.from_pretrained('model', { device, dtype: 'fp32' });
    log(`transformers.js loaded (${device})`);
    return { seconds: now() - t0, threads: device === 'wasm' ? env.backends.onnx.wasm.numThreads : null, isolated: self.crossOriginIsolated };
  },
  async runOurs(text) {
    const t0 = now();
    const a = await ours.analyze(text);
    // Seconds as the page sees them (with the CPU worker's messages).
    const r = { tokens: a.tokens, seconds: now() - t0 };
    a.free();
    return r;
  },
  // Where ours spends one note's time (DeidModel.profile): phases and kernel launches.
  async profileOurs(text) {
    const t0 = now();
    const r = await ours.profile(text);
    return { ...r, wall: now() - t0 };
  },
  // Each op of ours alone, read back (DeidModel.opTimes): device time per op, seen from the page.
  async opTimesOurs({ tokens, reps }) {
    return ours.opTimes(tokens, reps);
  },
  async runTheirs(text) {
    const t0 = now();
    const inputs = await tok(text);
    const t1 = now();
    const out = await theirs(inputs);
    const logits = out.logits;
    // The logits come back to the CPU (transformers.js reads outputs back by default); touch them.
    const data = logits.data;
    const t2 = now();
    let s = 0;
    for (let i = 0; i < data.length; i += 997) s += data[i];
    const r = { tokens: inputs.input_ids.dims[1], dims: logits.dims, tokenize: t1 - t0, forward: t2 - t1, seconds: t2 - t0, checksum: s };
    for (const v of Object.values(inputs)) v.dispose?.();
    logits.dispose?.();
    return r;
  },
};
log('ready');
window.benchReady = true;

