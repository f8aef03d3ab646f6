// Where our page spends a note's time at short lengths (issue: the page slower than
// transformers.js at 128 and 512 tokens). For each length: the first call (which compiles the
// pipelines it has not seen) and the median of --reps warm calls, split into tokenization,
// issuing the forward (host side: building bindings, submitting, compiling), waiting for the
// device and reading the logits back, and the softmax; with the kernel launches per forward and
// the distinct pipelines. In the browser a launch cannot be waited on, so per-kernel device times
// come from the native run on Mesa's lavapipe instead (`runtime-cli bench --profile`, written
// beside this table by profile.sh).
//
//   node bench/browser/profile.mjs [--model /tmp/bench-browser/model] [--lengths 128,512]
//        [--reps 3] [--device gpu|cpu] [--out bench/browser/profile-page.md]
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { HERE, REPO, startHarness } from './harness.mjs';

const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt; };
const MODEL = resolve(opt('model', '/tmp/bench-browser/model'));
const LENGTHS = opt('lengths', '128,512').split(',').filter(Boolean).map(Number);
const REPS = Number(opt('reps', '3'));
const DEVICE = opt('device', 'gpu');
const OUT = resolve(opt('out', join(HERE, `profile-page-${DEVICE}.md`)));
if (!existsSync(join(REPO, 'web/dist/pkg/web_bg.wasm'))) throw new Error('web/dist/pkg is not built (web/build.sh)');

const { chromiumVersion, openPage, call, close } = await startHarness({ model: MODEL, timeout: 600_000 });
const page = await openPage();
const texts = await call(page, 'texts');
const load = await call(page, 'loadOurs', DEVICE);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const ms = (x) => (1000 * x).toFixed(1);

const lines = [`Chromium ${chromiumVersion}, ours on \`${load.info.backend}\` (${load.info.adapter || 'no adapter name'}), ${load.info.precision}; load ${load.seconds.toFixed(2)} s.`, ''];
lines.push('| tokens | call | total ms | tokenize ms | issue ms | device + read-back ms | softmax ms | launches | pipelines (new) |');
lines.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|');
const kernelTables = [];
for (const n of LENGTHS) {
  const text = texts[String(n)];
  const first = await call(page, 'profileOurs', text);
  const warm = [];
  for (let i = 0; i < REPS; i++) warm.push(await call(page, 'profileOurs', text));
  const row = (name, rs) => {
    const m = (k) => ms(median(rs.map((r) => r[k])));
    lines.push(`| ${n} | ${name} | ${m('total_s')} | ${m('tokenize_s')} | ${m('issue_s')} | ${m('read_s')} | ${m('softmax_s')} | ${rs[0].launches} | ${rs[0].pipelines} (${rs[0].new_pipelines}) |`);
  };
  row('first', [first]);
  row(`warm (median of ${REPS})`, warm);
  console.log(`${n}: first ${ms(first.total_s)} ms, warm ${ms(median(warm.map((r) => r.total_s)))} ms`);
  // Host time from each launch to the next, per kernel: on the first call mostly compilation.
  const warmHost = new Map(warm[warm.length >> 1].kernels.map((k) => [k.name, k.host_s]));
  kernelTables.push(`### ${n} tokens: launches and host time per kernel`, '', '| kernel | launches | first call host ms | warm host ms |', '|---|---:|---:|---:|');
  for (const k of first.kernels) kernelTables.push(`| ${k.name} | ${k.launches} | ${ms(k.host_s)} | ${ms(warmHost.get(k.name) ?? NaN)} |`);
  kernelTables.push('');
  const ops = await call(page, 'opTimesOurs', { tokens: n, reps: REPS });
  // The ops one by one; a "whole layer" row repeats its layer's ops in one submission.
  const sum = ops.ops.filter((o) => !o.name.includes('whole layer')).reduce((a, o) => a + o.seconds, 0);
  kernelTables.push(`### ${n} tokens: each op alone, read back (median of ${REPS}, minus an empty read-back of ${ms(ops.empty_read_s)} ms)`, '', '| op | ms | share |', '|---|---:|---:|');
  for (const o of ops.ops) kernelTables.push(`| ${o.name} | ${ms(o.seconds)} | ${o.name.includes('whole layer') ? '–' : `${(100 * o.seconds / sum).toFixed(0)}%`} |`);
  kernelTables.push(`| **the ops above, one by one (first layer of each kind; whole-layer rows not counted)** | **${ms(sum)}** | |`, '');
}
await close();
const md = [...lines, '', ...kernelTables].join('\n');
writeFileSync(OUT, md);
console.log(md);
