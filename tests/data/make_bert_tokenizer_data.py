#!/usr/bin/env python3
"""Tokenizer test data for classic BERT folders that ship no `tokenizer.json`.

Creates, next to this script (tests/data/):

  bert-wordpiece/      vocab.txt, tokenizer_config.json, golden.json, golden_cased.json
  bert-torch/          vocab.txt, tokenizer_config.json (the same two files; other files there are left alone)
  bert-bpe-files/      vocab.json, merges.txt, golden.json

bert-wordpiece/vocab.txt fits the tiny BERT test model in tests/fixtures-bert/tiny-bert-mlm
(vocab_size 320, [UNK] 300, [CLS] 301, [SEP] 302, [PAD] 303, [MASK] 304):

  * lines 0..299: 300 WordPiece pieces trained with the `tokenizers` library's WordPieceTrainer
    (BertNormalizer lowercase, BertPreTokenizer, prefix "##", no special tokens) on the lowercased
    clinical text of tests/data/mts-dialog/MTS-Dialog-ValidationSet.csv (column `section_text`) and
    tests/data/aci-bench/valid.csv (column `note`), one line of text per training sentence;
  * lines 300..304: [UNK] [CLS] [SEP] [PAD] [MASK];
  * lines 305..319: [unused0] .. [unused14].

golden.json / golden_cased.json are lists of cases
    {"text", "text_pair" (optional), "ids", "type_ids", "tokens", "offsets", "byte_offsets"}
produced by transformers' BertTokenizer (= BertTokenizerFast in transformers 5, the `tokenizers`
backend) loaded with `from_pretrained(bert-wordpiece/)` (golden_cased.json: `do_lower_case=False`),
with special tokens ([CLS] A [SEP] / [CLS] A [SEP] B [SEP]). `offsets` are what Python returns
(character offsets into the text, or into text_pair for tokens with type id 1; (0, 0) for [CLS]/[SEP]);
`byte_offsets` are the same offsets converted to UTF-8 byte offsets, which is what the Rust
`tokenizers` crate's `Tokenizer::encode` gives. Every case's ids and type ids are cross-checked
against the slow pure-Python tokenizer (BertTokenizerLegacy in transformers 5) and the script stops
if they differ.

Note: in transformers 5.23 `BertTokenizerFast(vocab_file=..., do_lower_case=...)` silently ignores
`vocab_file` (it builds a 5-token default vocabulary), so the tokenizer is loaded with
`from_pretrained` on the folder, which is also what a user does.

bert-bpe-files/ holds vocab.json and merges.txt extracted from
tests/fixtures-bert/tiny-bert-mlm/tokenizer.json (byte-level BPE, 300 tokens, 44 merges). vocab.json
also lists the five special tokens with their ids 300..304 (as RoBERTa's vocab.json lists <s> etc.),
so a build from files gives them the same ids. golden.json is a list of cases
    {"text", "text_pair" (optional), "ids", "type_ids", "tokens", "offsets", "offsets_trimmed"}
where ids, type_ids, tokens and offsets come from the fixture's tokenizer.json
(`tokenizers.Tokenizer.from_file`, add_special_tokens=True) and `offsets_trimmed` from a build from
the two files as the Rust module builds it (below). All texts are ASCII, so character offsets equal
byte offsets. What a plain byte-level BPE build from vocab.json + merges.txt cannot express of the
fixture's tokenizer.json, and how the texts avoid it:

  * normalizer NFC: the build has no normalizer; NFC leaves ASCII unchanged.
  * [MASK] is an AddedToken with lstrip=True in the fixture (like ModernBERT's); the build registers
    plain special tokens, so " [MASK]" after a space gives an extra "Ġ" token there. [MASK] appears
    only at the start of a text or right after a non-space character, where both agree (the script
    checks that " x [MASK]" does differ, so the note stays true).
  * post-processing: the fixture has a TemplateProcessing post-processor only, so its offsets keep
    the leading space of "Ġword" tokens (offsets (3, 11) for " patient"); the build runs a ByteLevel
    post-processor with trim_offsets=True before the same template, which trims that space
    ((4, 11)). ids and type ids agree on every case; `offsets_trimmed` is checked to be `offsets`
    with leading/trailing spaces of each token removed.

Reproducibility: tokenizers' WordPieceTrainer breaks ties between equally frequent pairs (and orders the
initial alphabet) in hash-map order, so two trainings on the same text give different vocabularies. The
committed bert-wordpiece/vocab.txt is therefore the reference: by default the script reuses its first 300
lines and regenerates everything else from them (deterministically); `--retrain` trains a new vocabulary.
Run with the Python that has transformers 5.23 + tokenizers 0.23.3:

    python tests/data/make_bert_tokenizer_data.py            # (re)writes the files above, keeping the pieces
    python tests/data/make_bert_tokenizer_data.py --retrain  # trains new pieces (changes every golden id)
    python tests/data/make_bert_tokenizer_data.py --check    # builds into a temp dir, compares with the files here
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import json
import os
import shutil
import sys
import tempfile

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import BertTokenizer  # noqa: E402  (BertTokenizerFast is the same class in transformers 5)
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
FIXTURE = os.path.join(TESTS, "fixtures-bert", "tiny-bert-mlm")
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 300..304, as in the fixture
N_PIECES = 300
VOCAB_SIZE = 320

# ---------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------


def corpus() -> list[str]:
    """Lowercased lines of clinical text from the MTS-Dialog section texts and the ACI-BENCH notes."""
    lines: list[str] = []
    with open(os.path.join(HERE, "mts-dialog", "MTS-Dialog-ValidationSet.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            lines += row["section_text"].splitlines()
    with open(os.path.join(HERE, "aci-bench", "valid.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            lines += row["note"].splitlines()
    return [line.strip().lower() for line in lines if line.strip()]


def train_wordpiece(lines: list[str]) -> list[str]:
    """300 WordPiece pieces, in id order."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=N_PIECES, min_frequency=2, special_tokens=[], show_progress=False,
                                        continuing_subword_prefix="##")
    tok.train_from_iterator(lines, trainer=trainer)
    vocab = tok.get_vocab(with_added_tokens=False)
    pieces = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in pieces] == list(range(len(pieces))), "trained ids are not 0..n-1"
    if len(pieces) != N_PIECES:
        sys.exit(f"WordPieceTrainer gave {len(pieces)} pieces, expected {N_PIECES}")
    for p in pieces:
        assert p.strip() == p and p and "\n" not in p, f"odd piece {p!r}"
    return pieces


# ---------------------------------------------------------------------------------------------------------------
# Golden cases
# ---------------------------------------------------------------------------------------------------------------

WORDPIECE_CASES: list[tuple[str, str | None]] = [
    ("the patient reports chest pain and shortness of breath.", None),
    ("The Patient Reports Chest Pain; MRI Shows No Acute Findings.", None),
    ("Café naïve résumé", None),
    ("患者头痛 headache 三天", None),
    ("a" * 100, None),  # 100 characters: still split into pieces
    ("b" * 101 + " pain", None),  # 101 characters: one [UNK]
    ("the patient has [MASK] pain", None),
    ("chest[MASK]pain and [mask] [SEP] inside", None),
    ("BP 120/80, HR 72.", None),
    ("  tabs\tand\nnewlines\r\n  and  double  spaces  ", None),
    ("control\x00chars\u200band emoji \U0001F600 here", None),
    ("What brings you in today?", "I have had a cough for two weeks."),
    ("Any allergies?", "No known drug allergies."),
    ("", None),
    ("", "only the second text"),
]

CASED_CASES: list[tuple[str, str | None]] = [
    ("the patient reports chest pain", None),
    ("The Patient Reports Chest Pain", None),
    ("Café naïve", None),
    ("the patient has [MASK] pain", None),
    ("BP 120/80, HR 72.", None),
    ("history of present illness", "Denies Fever."),
]

BPE_CASES: list[tuple[str, str | None]] = [
    ("The patient reports chest pain and shortness of breath.", None),
    ("BP 120/80, HR 72. She's been taking 20mg daily; it's fine.", None),
    ("  leading spaces,  double  spaces and trailing   ", None),
    ("line one\nline two\ttab", None),
    ("[MASK] at the start and chest[MASK]pain inside", None),
    ("[CLS] and [SEP] and [UNK] in text", None),
    ("What brings you in today?", "I have had a cough for two weeks."),
    ("Any allergies?", "No known drug allergies."),
    ("", None),
    ("", "only B"),
]


def char_to_byte(text: str, offsets: list[tuple[int, int]]) -> list[list[int]]:
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8")))
    return [[pos[a], pos[b]] for a, b in offsets]


def wordpiece_golden(folder: str, cases, do_lower_case: bool) -> list[dict]:
    fast = BertTokenizer.from_pretrained(folder, do_lower_case=do_lower_case)
    slow = BertTokenizerLegacy(vocab_file=os.path.join(folder, "vocab.txt"), do_lower_case=do_lower_case)
    assert fast.vocab_size == VOCAB_SIZE and fast.convert_tokens_to_ids(SPECIALS) == list(range(300, 305))
    out = []
    for text, pair in cases:
        enc = fast(text, pair, add_special_tokens=True, return_offsets_mapping=True, return_token_type_ids=True)
        ids, type_ids, offsets = enc["input_ids"], enc["token_type_ids"], [tuple(o) for o in enc["offset_mapping"]]
        ref = slow(text, pair, add_special_tokens=True, return_token_type_ids=True)
        if ref["input_ids"] != ids or ref["token_type_ids"] != type_ids:
            sys.exit(f"fast and slow BertTokenizer differ on {text!r}/{pair!r}:\n {ids}\n {ref['input_ids']}")
        byte_offsets = [char_to_byte(pair if ty == 1 else text, [o])[0] for ty, o in zip(type_ids, offsets)]
        case = {"text": text}
        if pair is not None:
            case["text_pair"] = pair
        case.update(ids=ids, type_ids=type_ids, tokens=enc.tokens(), offsets=[list(o) for o in offsets], byte_offsets=byte_offsets)
        out.append(case)
    return out


def write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def committed_pieces() -> list[str] | None:
    """The 300 pieces of the committed bert-wordpiece/vocab.txt, or None when there is none."""
    path = os.path.join(HERE, "bert-wordpiece", "vocab.txt")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[-1] == "" and len(lines) == VOCAB_SIZE + 1 and lines[N_PIECES:N_PIECES + len(SPECIALS)] == SPECIALS, path
    return lines[:N_PIECES]


def make_wordpiece(out: str, retrain: bool) -> None:
    pieces = None if retrain else committed_pieces()
    if pieces is None:
        pieces = train_wordpiece(corpus())
    lines = pieces + SPECIALS + [f"[unused{i}]" for i in range(VOCAB_SIZE - N_PIECES - len(SPECIALS))]
    assert len(lines) == VOCAB_SIZE and len(set(lines)) == VOCAB_SIZE
    config = json.load(open(os.path.join(FIXTURE, "config.json")))
    assert config["vocab_size"] == VOCAB_SIZE and config["pad_token_id"] == lines.index("[PAD]")
    tokcfg = {
        "do_lower_case": True,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "BertTokenizer",
    }
    for name in ("bert-wordpiece", "bert-torch"):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(line + "\n" for line in lines))
        write_json(os.path.join(d, "tokenizer_config.json"), tokcfg)
    d = os.path.join(out, "bert-wordpiece")
    write_json(os.path.join(d, "golden.json"), wordpiece_golden(d, WORDPIECE_CASES, True))
    write_json(os.path.join(d, "golden_cased.json"), wordpiece_golden(d, CASED_CASES, False))


# ---------------------------------------------------------------------------------------------------------------
# Byte-level BPE from the fixture
# ---------------------------------------------------------------------------------------------------------------


def bpe_from_files(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """The pipeline the Rust module builds from vocab.json + merges.txt with default options."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]),
    ])
    return tok


def trim(tokens: list[str], offsets: list[tuple[int, int]]) -> list[list[int]]:
    """Offsets with each token's leading/trailing (byte-level) spaces removed, as ByteLevel(trim_offsets) does."""
    out = []
    for tok, (a, b) in zip(tokens, offsets):
        lead = len(tok) - len(tok.lstrip("Ġ \t\n"))
        trail = len(tok) - len(tok.rstrip("Ġ \t\n"))
        a2 = min(a + lead, b)
        b2 = max(b - trail, a2) if b >= trail else b
        out.append([a2, b2])
    return out


def make_bpe(out: str) -> None:
    spec = json.load(open(os.path.join(FIXTURE, "tokenizer.json"), encoding="utf-8"))
    model = spec["model"]
    assert model["type"] == "BPE" and model["continuing_subword_prefix"] is None and model["end_of_word_suffix"] is None
    assert spec["pre_tokenizer"]["type"] == "ByteLevel" and not spec["pre_tokenizer"]["add_prefix_space"]
    assert spec["normalizer"] == {"type": "NFC"}, "the notes in the docstring assume an NFC normalizer"
    vocab = dict(model["vocab"])
    for t in spec["added_tokens"]:
        assert t["content"] not in vocab
        vocab[t["content"]] = t["id"]
    assert [vocab[s] for s in SPECIALS] == list(range(300, 305))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    assert all(len(m) == 2 and " " not in m[0] + m[1] for m in merges)

    d = os.path.join(out, "bert-bpe-files")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "vocab.json"), dict(sorted(vocab.items(), key=lambda kv: kv[1])))
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))

    fixture = Tokenizer.from_file(os.path.join(FIXTURE, "tokenizer.json"))
    built = bpe_from_files(vocab, merges)
    golden = []
    for text, pair in BPE_CASES:
        assert text.isascii() and (pair is None or pair.isascii())
        e = fixture.encode(text, pair, add_special_tokens=True)
        b = built.encode(text, pair, add_special_tokens=True)
        if e.ids != b.ids or e.type_ids != b.type_ids:
            sys.exit(f"fixture tokenizer.json and the build from files differ on {text!r}/{pair!r}:\n {e.ids}\n {b.ids}")
        if [list(o) for o in b.offsets] != trim(e.tokens, e.offsets):
            sys.exit(f"trimmed offsets are not the fixture's offsets without spaces on {text!r}: {b.offsets} {e.offsets}")
        case = {"text": text}
        if pair is not None:
            case["text_pair"] = pair
        case.update(ids=e.ids, type_ids=e.type_ids, tokens=e.tokens, offsets=[list(o) for o in e.offsets],
                    offsets_trimmed=[list(o) for o in b.offsets])
        golden.append(case)
    # Keep the docstring honest: lstrip on [MASK] does matter after a space.
    assert fixture.encode("x [MASK]").ids != built.encode("x [MASK]").ids
    write_json(os.path.join(d, "golden.json"), golden)


def build(out: str, retrain: bool = False) -> None:
    make_wordpiece(out, retrain)
    make_bpe(out)


FILES = [
    "bert-wordpiece/vocab.txt", "bert-wordpiece/tokenizer_config.json", "bert-wordpiece/golden.json",
    "bert-wordpiece/golden_cased.json", "bert-torch/vocab.txt", "bert-torch/tokenizer_config.json",
    "bert-bpe-files/vocab.json", "bert-bpe-files/merges.txt", "bert-bpe-files/golden.json",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="build into a temp dir and compare with the files here")
    ap.add_argument("--retrain", action="store_true", help="train new WordPiece pieces instead of reusing vocab.txt")
    args = ap.parse_args()
    if not args.check:
        build(HERE, args.retrain)
        print("wrote", ", ".join(FILES))
        return
    tmp = tempfile.mkdtemp()
    try:
        build(tmp)
        bad = [f for f in FILES if not filecmp.cmp(os.path.join(tmp, f), os.path.join(HERE, f), shallow=False)]
    finally:
        shutil.rmtree(tmp)
    if bad:
        sys.exit("differ: " + ", ".join(bad))
    print("all", len(FILES), "files identical")


if __name__ == "__main__":
    main()
