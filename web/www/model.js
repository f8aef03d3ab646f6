// One way to load and run a model, whichever build runs it:
//   - WebGPU, or the CPU on one thread: the page's main build (pkg/), on this thread;
//   - the CPU on several threads, where the page is cross-origin isolated (SharedArrayBuffer):
//     the threaded build (pkg-threads/) in a module worker (worker.js) with a pool of Web Workers.
// Both give the same results (the same Rust code decodes them) and the same interface:
//   model.info                      {parameters, …, backend, threads, fallback} (DeidModel.info)
//   await model.analyze(text)       {tokens, seconds, result(threshold, surrogate), free()}
//   await analysis.result(t, s)     {spans, redacted}, as `runtime-cli deid` writes them
//   await model.profile(text), await model.opTimes(tokens, reps), model.free()
import init, { DeidModel, defaultThreshold } from './pkg/web.js';

export { defaultThreshold };

/// Starts the page's main build (needed before defaultThreshold()).
export const start = () => init();

/// Whether this page may run wasm threads: cross-origin isolated, with more than one core.
export const threadsAllowed = () =>
  globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function' && (navigator.hardwareConcurrency || 1) > 1;

// ---- on this thread ----------------------------------------------------------------------------
class LocalModel {
  constructor(m) { this.m = m; this.info = JSON.parse(m.info()); }
  async analyze(text) {
    const a = await this.m.analyze(text);
    return { tokens: a.tokens, seconds: a.seconds, result: async (t, s) => JSON.parse(a.result(t, s)), free: () => a.free() };
  }
  async profile(text) { return JSON.parse(await this.m.profile(text)); }
  async opTimes(tokens, reps) { return JSON.parse(await this.m.opTimes(tokens, reps)); }
  free() { this.m.free(); }
}

// ---- in the CPU worker -------------------------------------------------------------------------
let worker = null;   // the one worker (its thread pool is global to its module)
let started = null;  // its `start` reply
let seq = 0;
const pending = new Map();

function request(op, args, transfer = []) {
  return new Promise((resolve, reject) => {
    const id = ++seq;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, args }, transfer);
  });
}

// The worker and its pool, once; `threads` counts the pool's workers.
function startWorker(threads) {
  if (started) return started;
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data: { id, value, error } }) => {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    if (error !== undefined) p.reject(new Error(error)); else p.resolve(value);
  };
  // A worker that cannot start (its script or module failed): every waiting request fails, and
  // the next load starts afresh.
  worker.onerror = (e) => {
    e.preventDefault?.();
    const err = new Error(`the CPU worker failed: ${e.message || 'its module could not be loaded'}`);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    worker.terminate();
    worker = null;
    started = null;
  };
  // A pool that cannot start: the worker goes, and later loads stay on one thread.
  started = request('start', { threads }).catch((e) => {
    worker?.terminate();
    worker = null;
    throw e;
  });
  return started;
}

class WorkerModel {
  constructor(id, info) { this.id = id; this.info = JSON.parse(info); }
  static async load(files, threads) {
    await startWorker(threads);
    // The bytes move to the worker (their buffers are transferred, not copied).
    const buffers = [...new Set([...files.values()].map((a) => a.buffer))];
    const { model, info } = await request('load', { files, device: 'cpu' }, buffers);
    return new WorkerModel(model, info);
  }
  async analyze(text) {
    const { analysis, tokens, seconds } = await request('analyze', { model: this.id, text });
    return {
      tokens, seconds,
      result: async (threshold, surrogate) => JSON.parse(await request('result', { analysis, threshold, surrogate })),
      free: () => { request('free', { id: analysis }).catch(() => {}); },
    };
  }
  async profile(text) { return JSON.parse(await request('profile', { model: this.id, text })); }
  async opTimes(tokens, reps) { return JSON.parse(await request('opTimes', { model: this.id, tokens, reps })); }
  free() { if (worker) request('free', { id: this.id }).catch(() => {}); }
}

/// Load a model from its files (name -> Uint8Array; on the threaded path their buffers are
/// transferred to the worker, so the caller's arrays are emptied). `device`: auto, gpu or cpu.
/// `threads`: the CPU pool's size where threads are allowed (default: every core); 1 keeps the
/// CPU path on this thread.
export async function loadModel(files, device, { threads = navigator.hardwareConcurrency || 1 } = {}) {
  const threaded = threadsAllowed() && threads > 1;
  if (device === 'cpu' && threaded) {
    // A worker that cannot start (before any file moved to it) falls back to one thread here;
    // any later error is the load's own and is reported.
    if (await workerStarts(threads)) return WorkerModel.load(files, threads);
  }
  await init();
  const m = new LocalModel(await DeidModel.load(files, device));
  // WebGPU was asked for but the CPU runs (no usable adapter): threads there too, if they start
  // and load; otherwise the model loaded here stays.
  if (m.info.backend === 'cpu' && device !== 'cpu' && threaded && await workerStarts(threads)) {
    try {
      const w = await WorkerModel.load(files, threads);
      w.info.fallback = m.info.fallback;
      m.free();
      return w;
    } catch (e) {
      console.warn(`the CPU worker could not load the model (${e.message}); running on one thread`);
    }
  }
  return m;
}

async function workerStarts(threads) {
  try {
    await startWorker(threads);
    return true;
  } catch (e) {
    console.warn(`${e.message}; running on one thread instead`);
    return false;
  }
}
