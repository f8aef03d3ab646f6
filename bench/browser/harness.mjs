// What run.mjs and profile.mjs share: a local static server for web/dist, the model folder, page/
// and the installed transformers.js / onnxruntime-web (COOP/COEP headers, so wasm threads are
// allowed), headless Chromium with WebGPU on SwiftShader, and page calls with deadlines.
import http from 'node:http';
import { createReadStream, statSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve, extname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '../..');

export async function startHarness({ model, timeout, chromium: executablePath = process.env.CHROMIUM || '/usr/bin/chromium' }) {
  const MODEL = model, TIMEOUT = timeout;
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
  let browser = await chromium.launch({ executablePath, args: ARGS });
  const chromiumVersion = browser.version();
  // A fresh browser (a new GPU process too), so that one side's memory and state cannot reach
  // the other's.
  const relaunch = async () => {
    await browser.close().catch(() => {});
    browser = await chromium.launch({ executablePath, args: ARGS });
  };

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


  const close = async () => { await browser.close().catch(() => {}); server.close(); };
  return { BASE, ARGS, chromiumVersion, logs, served, openPage, call, close, relaunch };
}

// Peak resident memory (VmHWM) summed over this process's descendants: the browser, its GPU
// process (where SwiftShader runs WebGPU), renderers and utilities. Linux only; null elsewhere.
export function browserPeakMiB() {
  let procs;
  try { procs = readdirSync('/proc').filter((d) => /^\d+$/.test(d)); } catch { return null; }
  const parent = new Map();
  const peak = new Map();
  for (const pid of procs) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      parent.set(pid, status.match(/^PPid:\s+(\d+)/m)?.[1]);
      const hwm = status.match(/^VmHWM:\s+(\d+) kB/m);
      if (hwm) peak.set(pid, Number(hwm[1]));
    } catch { /* gone */ }
  }
  const me = String(process.pid);
  const descends = (pid) => { for (let p = parent.get(pid), n = 0; p && n < 64; p = parent.get(p), n++) if (p === me) return true; return false; };
  let kb = 0;
  for (const [pid, v] of peak) if (descends(pid)) kb += v;
  return kb / 1024;
}
