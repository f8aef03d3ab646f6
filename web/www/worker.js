// The CPU path on several threads: this module worker runs the page's threaded build
// (pkg-threads/: the same `web` crate, compiled with wasm atomics on shared memory), whose CPU
// backend spreads its GEMMs, attention heads and rows over a rayon pool of Web Workers
// (wasm-bindgen-rayon). It runs here, not on the page's thread, because rayon's caller waits for
// its pool, and a page's main thread may not block. The page talks to it through model.js:
// requests {id, op, args}, replies {id, value} or {id, error}. Models and analyses stay here,
// named by numbers; the note's text comes in and the decoded result goes out, nothing else.
import init, { initThreadPool, DeidModel } from './pkg-threads/web.js';

const objects = new Map();  // number -> DeidModel | Analysis
let next = 1;
const keep = (o) => { const id = next++; objects.set(id, o); return id; };
const get = (id) => {
  const o = objects.get(id);
  if (!o) throw new Error(`no object ${id} in the CPU worker (freed already?)`);
  return o;
};

const ops = {
  // Once, first: the module and a pool of `threads` workers on its memory.
  async start({ threads }) {
    await init();
    await initThreadPool(threads);
    return { threads };
  },
  async load({ files, device }) {
    const m = await DeidModel.load(files, device);
    return { model: keep(m), info: m.info() };
  },
  async analyze({ model, text }) {
    const a = await get(model).analyze(text);
    return { analysis: keep(a), tokens: a.tokens, seconds: a.seconds };
  },
  result({ analysis, threshold, surrogate }) { return get(analysis).result(threshold, surrogate); },
  profile({ model, text }) { return get(model).profile(text); },
  opTimes({ model, tokens, reps }) { return get(model).opTimes(tokens, reps); },
  free({ id }) {
    objects.get(id)?.free();
    objects.delete(id);
  },
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    if (!Object.hasOwn(ops, op)) throw new Error(`unknown request "${op}"`);
    self.postMessage({ id, value: await ops[op](args) });
  } catch (e) {
    self.postMessage({ id, error: String(e?.message ?? e) });
  }
};
