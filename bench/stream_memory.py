#!/usr/bin/env python3
"""Peak memory of `runtime-cli embed` and `deid` against the size of their input: a 200 MB JSONL
file of ordinary notes goes through both with a small model, and so does a 2 MB file of the same
notes, the baseline measured in the same run. Memory bounded by design (inputs read and results
written as streams) shows as a ratio near 1 between the two, and a peak far below the file size.

    python3 bench/stream_memory.py [--mb 200] [--model tests/fixtures/tiny-modernbert-tokcls] [--out bench/stream-memory.md]

Notes are the ACI-BENCH and MTS-Dialog texts of tests/data (CC BY 4.0), repeated with distinct
ids until the file has the size asked for. Peak resident memory (VmHWM) is read from
`/usr/bin/time -f %M` when present, else from the kernel's accounting of the child
(`resource.getrusage`). Builds target/release/runtime-cli if it is missing.
"""
import argparse, csv, json, os, resource, subprocess, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CLI = os.path.join(ROOT, "target", "release", "runtime-cli")


def notes():
    out = []
    csv.field_size_limit(1 << 30)
    for path, column in [("tests/data/aci-bench/valid.csv", "note"), ("tests/data/mts-dialog/MTS-Dialog-ValidationSet.csv", "section_text")]:
        with open(os.path.join(ROOT, path), newline="", encoding="utf-8") as f:
            out += [row[column] for row in csv.DictReader(f) if row[column].strip()]
    return out


def write_jsonl(path, size_bytes, texts):
    written, i = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            line = json.dumps({"id": f"note-{i}", "text": texts[i % len(texts)]}) + "\n"
            f.write(line)
            written += len(line.encode())
            i += 1
    return i


def peak_rss(args):
    """Run to completion; return (seconds, peak RSS in MiB, stderr's last line)."""
    t0 = time.time()
    if os.path.exists("/usr/bin/time"):
        p = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB=%M"] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = p.stderr.strip().splitlines()
        peak = next(int(l.split("=")[1]) for l in reversed(lines) if l.startswith("PEAK_KB=")) / 1024
        summary = [l for l in lines if not l.startswith("PEAK_KB=")]
    else:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        summary = p.stderr.strip().splitlines()
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{p.stderr}")
    return time.time() - t0, peak, summary[-1] if summary else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200.0, help="size of the large input, in MB")
    ap.add_argument("--baseline-mb", type=float, default=2.0)
    ap.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "tiny-modernbert-tokcls"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="also write the table (Markdown) here")
    a = ap.parse_args()
    if not os.path.exists(CLI):
        subprocess.run(["cargo", "build", "--release", "-p", "runtime-cli", "--bin", "runtime-cli"], cwd=ROOT, check=True)
    texts = notes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {}
        for label, mb in [("baseline", a.baseline_mb), ("large", a.mb)]:
            path = os.path.join(tmp, f"{label}.jsonl")
            docs = write_jsonl(path, int(mb * 1e6), texts)
            inputs[label] = (path, docs, os.path.getsize(path))
        for command in ["embed", "deid"]:
            result = {}
            for label, (path, docs, size) in inputs.items():
                out = os.path.join(tmp, f"{command}-{label}.jsonl")
                secs, peak, summary = peak_rss([CLI, command, path, "--model", a.model, "--device", a.device, "-o", out])
                result[label] = (docs, size, secs, peak, summary)
                print(f"{command} {label}: {docs} notes, {size / 1e6:.1f} MB in {secs:.0f} s, peak RSS {peak:.0f} MiB  [{summary}]", flush=True)
                os.remove(out)
            rows.append((command, result))
    lines = [
        f"Peak resident memory of runtime-cli against its input ({os.path.relpath(a.model, ROOT)}, --device {a.device}); the baseline is the same notes in a {a.baseline_mb:g} MB file, measured in the same run.",
        "",
        "| command | input | notes | seconds | peak RSS (MiB) | peak RSS / baseline's | input MB / peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for command, r in rows:
        base = r["baseline"][3]
        for label in ["baseline", "large"]:
            docs, size, secs, peak, _ = r[label]
            lines.append(f"| {command} | {size / 1e6:.1f} MB | {docs} | {secs:.0f} | {peak:.0f} | {peak / base:.2f}x | {size / 1e6 / peak:.2f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
