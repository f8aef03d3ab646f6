//! The bundled models' pipeline (models/recipe/build.sh): the corpus, the trained vocabulary, the
//! synthetic PHI notes, f16 export, and the shipped models themselves (models/clinical-small,
//! models/deid-small) checked against what the README reports.

use std::path::{Path, PathBuf};

use kernels::prelude::*;
use kernels::CpuBackend;
use runtime::Encoder;
use runtime::folder::ModelFolder;
use runtime::tokenize::Tokenizer;
use runtime::ModernBert;
use trainer::synth::{self, Split, CATEGORIES};
use trainer::{corpus, data, deid_eval, pretrain};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trainer-bundled-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn icd9_codes_get_their_decimal_point() {
    assert_eq!(corpus::icd9_code("25000", false), "250.00");
    assert_eq!(corpus::icd9_code("0010", false), "001.0");
    assert_eq!(corpus::icd9_code("V1011", false), "V10.11");
    assert_eq!(corpus::icd9_code("E8889", false), "E888.9");
    assert_eq!(corpus::icd9_code("4523", true), "45.23");
    assert_eq!(corpus::icd9_code("042", false), "042");
}

#[test]
fn corpus_holds_every_source_and_a_stable_heldout_split() {
    let docs = corpus::documents(&repo().join("data")).unwrap();
    for src in ["aci-bench/train.csv", "aci-bench/clinicalnlp_taskC_test2.csv", "mts-dialog/MTS-Dialog-TrainingSet.csv", "negex-testset/rsAnnotations", "icd9/CMS32_DESC_LONG_DX.txt", "icd9/CMS32_DESC_LONG_SG.txt"] {
        assert!(docs.iter().any(|d| d.source.starts_with(src)), "{src}");
    }
    assert!(docs.iter().any(|d| d.text.contains("ICD 9 code for 250.00: Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled")));
    assert!(docs.iter().any(|d| d.text.contains("ICD 9 procedure code for 00.01: Therapeutic ultrasound of vessels of head and neck")));
    let (a, b) = (scratch("corpus-a"), scratch("corpus-b"));
    let r = corpus::build(&repo().join("data"), &a, 0.05, 42).unwrap();
    corpus::build(&repo().join("data"), &b, 0.05, 42).unwrap();
    for f in ["train.jsonl", "heldout.jsonl"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between two runs");
    }
    let frac = r.heldout_documents as f64 / (r.heldout_documents + r.train_documents) as f64;
    assert!((0.03..0.07).contains(&frac), "held out {frac}");
    let sources = |f: &str| -> std::collections::HashSet<String> {
        std::fs::read_to_string(a.join(f)).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["source"].as_str().unwrap().to_string()).collect()
    };
    assert!(sources("train.jsonl").is_disjoint(&sources("heldout.jsonl")));
    assert!(corpus::build(&repo().join("data"), &a, 1.5, 42).is_err());
    let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
}

#[test]
fn trained_tokenizer_has_modernberts_layout() {
    let dir = scratch("tokenizer");
    let docs = corpus::documents(&repo().join("data")).unwrap();
    let mut jsonl = String::new();
    for d in docs.iter().step_by(10) {
        jsonl += &serde_json::json!({"text": d.text}).to_string();
        jsonl.push('\n');
    }
    std::fs::write(dir.join("docs.jsonl"), jsonl).unwrap();
    let n = corpus::train_tokenizer(&dir.join("docs.jsonl"), 1000, &dir.join("tok")).unwrap();
    assert_eq!(n, 1000);
    let tok = Tokenizer::from_dir(&dir.join("tok")).unwrap();
    let s = &tok.specials;
    assert_eq!((s.unk, s.cls, s.sep, s.pad, s.mask), (Some(0), 1, 2, 3, Some(4)));
    let enc = tok.encode("The patient denies chest [MASK].").unwrap();
    assert_eq!((enc.ids[0], *enc.ids.last().unwrap()), (1, 2));
    // [MASK] takes the space before it (lstrip), as in ModernBERT's tokenizer.
    let at = enc.ids.iter().position(|&i| i == 4).unwrap();
    assert_ne!(tok.token(enc.ids[at - 1]).unwrap(), "Ġ");
    let text = "Metoprolol 25 mg twice daily; café au lait spots — noted.";
    assert_eq!(tok.decode(&tok.encode_plain(text).unwrap().ids).unwrap(), text);
    assert!(corpus::train_tokenizer(&dir.join("docs.jsonl"), 100, &dir.join("tok2")).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn synthetic_notes_are_seeded_and_their_offsets_exact() {
    let data = repo().join("data");
    let a = synth::generate(&data, Split::Train, 150, 7).unwrap();
    assert_eq!(a, synth::generate(&data, Split::Train, 150, 7).unwrap(), "same seed, same notes");
    assert_ne!(a, synth::generate(&data, Split::Train, 150, 8).unwrap());
    let mut seen = std::collections::HashSet::new();
    for note in &a {
        let chars: Vec<char> = note.text.chars().collect();
        let mut last_end = 0;
        for s in &note.spans {
            assert!(s.start >= last_end && s.start < s.end && s.end <= chars.len(), "{s:?} in a note of {} characters", chars.len());
            last_end = s.end;
            let value: String = chars[s.start..s.end].iter().collect();
            assert_eq!(value.trim(), value, "span with surrounding space: {value:?}");
            assert!(CATEGORIES.contains(&s.label.as_str()), "{}", s.label);
            match s.label.as_str() {
                "AGE" => assert!(value.parse::<u32>().unwrap() >= 90, "AGE {value}"),
                "DATE" => assert!(value.chars().any(|c| c.is_ascii_digit()), "DATE {value}"),
                "CONTACT" => assert!(value.chars().any(|c| c.is_ascii_digit()) || value.contains('@') || value.contains("www"), "CONTACT {value}"),
                _ => {}
            }
            seen.insert(s.label.clone());
        }
    }
    for c in CATEGORIES {
        assert!(seen.contains(c), "no {c} in 150 notes");
    }
}

#[test]
fn the_test_split_draws_names_the_train_split_never_uses() {
    let (train, test): (std::collections::HashSet<_>, std::collections::HashSet<_>) = (synth::names(Split::Train).into_iter().collect(), synth::names(Split::Test).into_iter().collect());
    assert!(train.is_disjoint(&test) && test.len() > 50);
    let notes = synth::generate(&repo().join("data"), Split::Test, 60, 3).unwrap();
    let mut checked = 0;
    for n in &notes {
        for s in n.spans.iter().filter(|s| s.label == "NAME") {
            let v: String = n.text.chars().skip(s.start).take(s.end - s.start).collect();
            for w in v.split([' ', ',']).filter(|w| w.len() > 2 && !w.ends_with('.') && w.chars().all(|c| c.is_alphabetic() || c == '\'')) {
                let known = test.iter().any(|t| t.eq_ignore_ascii_case(w));
                let train_only = train.iter().any(|t| t.eq_ignore_ascii_case(w)) && !known;
                assert!(!train_only, "test note uses the train name {w}");
                checked += known as usize;
            }
        }
    }
    assert!(checked > 50);
}

#[test]
fn export_to_f16_halves_the_weights_and_keeps_the_outputs() {
    let src = repo().join("tests/fixtures/tiny-modernbert-mlm");
    let out = scratch("export").join("f16");
    let bytes = trainer::checkpoint::export(&src, &out, runtime::weights::StoredDtype::F16).unwrap();
    let f32_bytes = std::fs::metadata(src.join("model.safetensors")).unwrap().len();
    assert!((bytes as f64) < 0.6 * f32_bytes as f64, "{bytes} vs {f32_bytes}");
    let be = CpuBackend::new();
    let run = |dir: &Path| -> Vec<f32> {
        let ModelFolder { config, checkpoint, tokenizer, .. } = ModelFolder::open(dir).unwrap();
        let m = ModernBert::load(&be, config.modernbert("test").unwrap().clone(), &checkpoint).unwrap();
        let ids = tokenizer.unwrap().encode("The patient denies chest pain.").unwrap().ids;
        let b = m.batch(&be, &[ids.as_slice()]).unwrap();
        kernels::block_on(be.read(&m.encode(&be, &b, None).unwrap())).unwrap()
    };
    let (a, b) = (run(&src), run(&out));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff > 0.0 && diff < 2e-2, "max difference {diff}");
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

/// models/clinical-small against its untrained initialisation on held-out documents, as
/// `trainer evaluate` measures for the README (here on the first 40 held-out documents).
#[test]
fn bundled_encoder_beats_its_initialisation_on_heldout_text() {
    let dir = scratch("heldout");
    corpus::build(&repo().join("data"), &dir.join("corpus"), 0.05, 42).unwrap();
    let heldout: Vec<String> = std::fs::read_to_string(dir.join("corpus/heldout.jsonl")).unwrap().lines().take(40).map(str::to_string).collect();
    std::fs::write(dir.join("eval.jsonl"), heldout.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("train.jsonl"), r#"{"text": "placeholder"}"#).unwrap();
    let model_dir = repo().join("models/clinical-small");
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let opts = data::PrepareOptions { max_seq_len: 512, eval_inputs: vec![dir.join("eval.jsonl")], ..Default::default() };
    data::prepare(&tok, &[dir.join("train.jsonl")], &dir.join("dataset"), &opts).unwrap();
    let be = CpuBackend::new();
    let (trained, tok) = pretrain::load_masked_lm(&be, &model_dir).unwrap();
    let t = pretrain::heldout_metrics(&be, &trained, &tok, &dir.join("dataset"), 8192, 42).unwrap();
    let mut run = pretrain::RunConfig::from_file(&repo().join("models/recipe/pretrain.toml")).unwrap();
    run.model.tokenizer = Some(model_dir.clone());
    let (init, tok) = pretrain::initial_model(&be, &run).unwrap();
    let i = pretrain::heldout_metrics(&be, &init, &tok, &dir.join("dataset"), 8192, 42).unwrap();
    eprintln!("trained {t:?}\ninit {i:?}");
    assert!(i.top10 < 0.05 && i.loss > 8.0, "the initialisation should know nothing: {i:?}");
    assert!(t.top1 > 0.35 && t.top10 > 0.6 && t.loss < 4.0, "{t:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// models/deid-small on unseen synthetic notes (the test split: other source notes, names,
/// streets and cities than training), through the runtime's de-identification path.
#[test]
fn bundled_deid_model_redacts_unseen_notes() {
    let dir = scratch("deid");
    let notes = synth::generate(&repo().join("data"), Split::Test, 40, 99).unwrap();
    data::write_jsonl(dir.join("test.jsonl").as_path(), &notes).unwrap();
    let (r, _) = deid_eval::evaluate(&CpuBackend::new(), &repo().join("models/deid-small"), &dir.join("test.jsonl"), runtime::deid::DEFAULT_THRESHOLD, deid_eval::Detector::Combined).unwrap();
    eprintln!("{}", r.render());
    assert!(r.micro.f1 > 0.8 && r.unredacted_fraction < 0.05, "{}", r.render());
    // The strict count (a value with one identifying word left leaks): 0.56% of the values and
    // 1.5% of the names on the 400-note test split (models/deid-small.md), over-redaction 1.0%;
    // issue 21's goals are 1%, 2% (NAME recall 0.98) and 2%. 40 notes vary more: guards.
    assert!(r.micro.leak_rate < 0.015 && r.over_redaction < 0.02, "{}", r.render());
    let name = r.categories.iter().find(|x| x.label == "NAME").unwrap();
    assert!(name.leak_rate < 0.04, "{}", r.render());
    for c in ["NAME", "DATE", "LOCATION", "ID", "CONTACT"] {
        let s = r.categories.iter().find(|x| x.label == c).unwrap();
        assert!(s.char_recall > 0.85, "{c}: {s:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The hand-written notes (data/deid-eval/): the combined detector every tool runs leaks far
/// less than the model alone, and not more than models/deid-small-handwritten*.md records.
#[test]
fn bundled_deid_on_hand_written_notes() {
    let be = CpuBackend::new();
    let model = repo().join("models/deid-small");
    // (file, values leaked by the combined detector as recorded, by the model alone)
    for (file, combined_max, model_min) in [("handwritten.txt", 5, 15), ("handwritten-2.txt", 9, 12)] {
        let data = repo().join("data/deid-eval").join(file);
        let (c, _) = deid_eval::evaluate(&be, &model, &data, runtime::deid::DEFAULT_THRESHOLD, deid_eval::Detector::Combined).unwrap();
        let (m, _) = deid_eval::evaluate(&be, &model, &data, runtime::deid::DEFAULT_THRESHOLD, deid_eval::Detector::ModelOnly).unwrap();
        eprintln!("{file}\n{}\n{}", c.render(), m.render());
        assert!(c.micro.leaked <= combined_max && m.micro.leaked >= model_min, "{file}: {} combined, {} model alone", c.micro.leaked, m.micro.leaked);
        assert!(c.over_redaction < 0.05 && c.over_redaction < m.over_redaction, "{file}: {}", c.render());
        let name = c.categories.iter().find(|x| x.label == "NAME").unwrap();
        assert!(name.leaked <= 1, "{file}: {}", c.render());
    }
}

#[test]
fn bundled_models_fit_in_25_mb() {
    let mut total = 0;
    for m in ["clinical-small", "deid-small"] {
        for e in std::fs::read_dir(repo().join("models").join(m)).unwrap() {
            total += e.unwrap().metadata().unwrap().len();
        }
    }
    assert!(total <= 25_000_000, "{total} bytes");
}

/// Issue 23's gates for `--dtype int8` on the bundled models: clinical-small's held-out
/// masked-token top-1 within 1 point of f32 (the whole held-out split, as the README measures it)
/// and its embeddings of real notes within cosine 0.995; deid-small's micro-F1 on unseen synthetic
/// notes within 0.5 points of f32 and its share of PHI characters left unredacted at most 0.2
/// points above f32's.
#[test]
fn int8_keeps_the_bundled_models_accuracy() {
    use kernels::backend::DType;
    let (f32_be, int8_be) = (CpuBackend::new(), CpuBackend::new().with_dtype(DType::Int8).unwrap());
    let dir = scratch("int8");
    corpus::build(&repo().join("data"), &dir.join("corpus"), 0.05, 42).unwrap();
    std::fs::write(dir.join("train.jsonl"), r#"{"text": "placeholder"}"#).unwrap();
    let model_dir = repo().join("models/clinical-small");
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let opts = data::PrepareOptions { max_seq_len: 512, eval_inputs: vec![dir.join("corpus/heldout.jsonl")], ..Default::default() };
    data::prepare(&tok, &[dir.join("train.jsonl")], &dir.join("dataset"), &opts).unwrap();
    let metrics = |be: &CpuBackend| {
        let (m, tok) = pretrain::load_masked_lm(be, &model_dir).unwrap();
        pretrain::heldout_metrics(be, &m, &tok, &dir.join("dataset"), 8192, 42).unwrap()
    };
    let (a, b) = (metrics(&f32_be), metrics(&int8_be));
    eprintln!("clinical-small held-out: f32 top-1 {:.4}, int8 {:.4}", a.top1, b.top1);
    assert!((a.top1 - b.top1).abs() <= 0.01, "top-1 f32 {} vs int8 {}", a.top1, b.top1);
    assert!(a.top1 > 0.6, "the f32 reference itself: {a:?}");

    // Embeddings of the held-out documents (mean-pooled, the first 512 tokens of each).
    let embed = |be: &CpuBackend| -> Vec<Vec<f32>> {
        let ModelFolder { config, checkpoint, .. } = ModelFolder::open(&model_dir).unwrap();
        let m = ModernBert::load(be, config.modernbert("test").unwrap().clone(), &checkpoint).unwrap();
        let docs = std::fs::read_to_string(dir.join("corpus/heldout.jsonl")).unwrap();
        docs.lines()
            .take(30)
            .map(|l| {
                let text = serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string();
                let mut ids = tok.encode(&text).unwrap().ids;
                ids.truncate(512);
                let batch = m.batch(be, &[ids.as_slice()]).unwrap();
                let h = m.encode(be, &batch, None).unwrap();
                kernels::block_on(be.read(&m.pool(be, &h, &batch, runtime::config::Pooling::Mean).unwrap())).unwrap()
            })
            .collect()
    };
    for (i, (x, y)) in embed(&f32_be).iter().zip(&embed(&int8_be)).enumerate() {
        let c = kernels::tolerance::cosine(x, y);
        assert!(c >= kernels::tolerance::INT8_EMBEDDING_COSINE && x != y, "held-out document {i}: int8 vs f32 cosine {c}");
    }

    let notes = synth::generate(&repo().join("data"), Split::Test, 120, 2).unwrap();
    data::write_jsonl(dir.join("test.jsonl").as_path(), &notes).unwrap();
    let deid = |be: &CpuBackend| {
        deid_eval::evaluate(be, &repo().join("models/deid-small"), &dir.join("test.jsonl"), runtime::deid::DEFAULT_THRESHOLD, deid_eval::Detector::Combined).unwrap().0
    };
    let (a, b) = (deid(&f32_be), deid(&int8_be));
    eprintln!("deid-small on 120 test notes: f32\n{}\nint8\n{}", a.render(), b.render());
    assert!((a.micro.f1 - b.micro.f1).abs() <= 0.005, "micro-F1 f32 {} vs int8 {}", a.micro.f1, b.micro.f1);
    assert!(b.unredacted_fraction <= a.unredacted_fraction + 0.002, "unredacted f32 {} vs int8 {}", a.unredacted_fraction, b.unredacted_fraction);
    let _ = std::fs::remove_dir_all(dir);
}
