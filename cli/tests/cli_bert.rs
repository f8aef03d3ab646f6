//! Every `runtime-cli` command end to end on the classic BERT fixture models (BertForMaskedLM,
//! BertForTokenClassification, and a BertForSequenceClassification made from them with the
//! reference's pooler), on both backends; and a 1,500-token note through a 512-position BERT,
//! which goes through overlapping windows and is never truncated.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, jsonl, ok, repo};

use runtime::weights::{serialize_f32, Checkpoint};

fn bert(name: &str) -> String {
    repo().join("tests/fixtures-bert").join(name).display().to_string()
}
fn data(name: &str) -> String {
    repo().join("tests/data").join(name).display().to_string()
}
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cli-bert-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copy a fixture folder, then change its config and add or replace tensors.
fn variant(name: &str, from: &str, edit: impl FnOnce(&mut serde_json::Value), extra: Vec<(String, Vec<usize>, Vec<f32>)>) -> PathBuf {
    let dir = scratch(name);
    let src = Path::new(&bert(from)).to_path_buf();
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let ckpt = Checkpoint::open_dir(&src).unwrap();
    let mut names: Vec<String> = ckpt.names().map(str::to_string).collect();
    names.sort();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .filter(|n| !extra.iter().any(|(e, _, _)| e == *n))
        .map(|n| {
            let t = ckpt.get(n).unwrap();
            (n.clone(), t.shape.to_vec(), t.to_f32().unwrap())
        })
        .collect();
    tensors.extend(extra);
    std::fs::write(dir.join("model.safetensors"), serialize_f32(&tensors, None).unwrap()).unwrap();
    dir
}

/// The token classifier with the reference's pooler, saved as a BertForSequenceClassification
/// (what the fixture's `seqcls_logits` were computed with).
fn seqcls_folder() -> PathBuf {
    let reference = Checkpoint::open_file(Path::new(&bert("reference.safetensors"))).unwrap();
    let pooler = ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
        .iter()
        .map(|n| {
            let t = reference.get(n).unwrap();
            (n.to_string(), t.shape.to_vec(), t.to_f32().unwrap())
        })
        .collect();
    variant("seqcls", "tiny-bert-tokcls", |c| c["architectures"] = serde_json::json!(["BertForSequenceClassification"]), pooler)
}

#[test]
fn check_both_bert_models_on_both_devices() {
    for (model, compared) in [("tiny-bert-mlm", 16), ("tiny-bert-tokcls", 18)] {
        for device in ["cpu", "gpu"] {
            let (stdout, _) = ok(&["check", "--model", &bert(model), "--reference", &bert("reference.safetensors"), "--device", device]);
            let last = stdout.lines().last().unwrap();
            assert!(last.ends_with(&format!("compared={compared}")), "{model} on {device}:\n{stdout}");
            let err: f32 = last.split_whitespace().next().unwrap().strip_prefix("max_abs_err=").unwrap().parse().unwrap();
            assert!(err <= kernels::tolerance::PARITY_F32, "{model} on {device}: {err}");
            for row in ["pair.last_hidden_state ", "pair.pooler_output ", "layer_2 "] {
                assert!(stdout.lines().any(|l| l.starts_with(row)), "{row}missing:\n{stdout}");
            }
            assert!(stdout.contains("pooler: from the reference file"), "{stdout}");
        }
    }
}

#[test]
fn info_names_the_architecture() {
    let (stdout, _) = ok(&["info", "--model", &bert("tiny-bert-tokcls")]);
    for needle in [
        "architecture: BertForTokenClassification (classic BERT: learned absolute positions up to 64, 2 token types, post-LayerNorm)",
        "weights: model.safetensors (safetensors, 55 tensors, F32)",
        "heads: token / sequence classification (5 labels",
        "tokenizer: ",
        "batching: windows of 62 tokens",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
    let (stdout, _) = ok(&["info", "--model", &seqcls_folder().display().to_string()]);
    assert!(stdout.contains("architecture: BertForSequenceClassification") && stdout.contains("pooler (tanh)"), "{stdout}");
}

#[test]
fn embed_fill_mask_deid_classify_on_both_devices() {
    let notes = data("mts-dialog/MTS-Dialog-ValidationSet.csv");
    let seqcls = seqcls_folder().display().to_string();
    let mut per_device = Vec::new();
    for device in ["cpu", "gpu"] {
        let (stdout, stderr) = ok(&["embed", &notes, "--text-column", "section_text", "--model", &bert("tiny-bert-mlm"), "--device", device]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 100);
        assert!(rows.iter().all(|r| r["embedding"].as_array().unwrap().len() == 48), "{stderr}");
        // Sections longer than the 62-token window are split, not truncated.
        assert!(stderr.contains("longer than the 62-token window"), "{stderr}");

        let (stdout, _) = ok(&["fill-mask", "Patient denies chest [MASK].", "--model", &bert("tiny-bert-mlm"), "--device", device, "--json"]);
        let masks = jsonl(&stdout);
        assert_eq!(masks.len(), 1, "{stdout}");
        assert_eq!((masks[0]["offset"].as_u64(), masks[0]["predictions"].as_array().map(Vec::len)), (Some(21), Some(5)), "{stdout}");

        let (stdout, stderr) = ok(&["deid", &notes, "--text-column", "section_text", "--model", &bert("tiny-bert-tokcls"), "--device", device]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 100, "{stderr}");

        let (stdout, _) = ok(&["classify", &notes, "--text-column", "section_text", "--model", &seqcls, "--device", device]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 100);
        for r in &rows {
            let total: f64 = r["scores"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
            assert!((total - 1.0).abs() < 1e-4);
        }
        per_device.push(rows);
    }
    for (a, b) in per_device[0].iter().zip(&per_device[1]) {
        let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((x - y).abs() < 1e-4, "classification differs between devices: {a} vs {b}");
    }
    // int8 on the CPU (classic BERT's layers take the same int8 products): the same labels.
    let (stdout, _) = ok(&["classify", &notes, "--text-column", "section_text", "--model", &seqcls, "--device", "cpu", "--dtype", "int8"]);
    let rows = jsonl(&stdout);
    let same = rows.iter().zip(&per_device[0]).filter(|(a, b)| a["label"] == b["label"]).count();
    assert!(same >= 95, "{same} of 100 labels agree with f32");
    assert!(rows.iter().zip(&per_device[0]).any(|(a, b)| a["score"] != b["score"]), "int8 gave exactly the f32 scores: it did not run in int8");
    // A BERT classifier reads its pooler: a pooling choice is refused, and so is a folder without a pooler.
    let m = fails(&["classify", &notes, "--text-column", "section_text", "--model", &seqcls, "--pooling", "mean"]);
    assert!(m.contains("a pooling choice does not apply"), "{m}");
    let no_pooler = variant("seqcls-no-pooler", "tiny-bert-tokcls", |c| c["architectures"] = serde_json::json!(["BertForSequenceClassification"]), vec![]);
    let m = fails(&["classify", &notes, "--text-column", "section_text", "--model", no_pooler.to_str().unwrap()]);
    assert!(m.contains("missing tensor \"bert.pooler.dense.weight\""), "{m}");
    // A token classifier is not a sequence classifier: classify refuses it instead of answering "O".
    let m = fails(&["classify", &notes, "--text-column", "section_text", "--model", &bert("tiny-bert-tokcls")]);
    assert!(m.contains("classify needs a BertForSequenceClassification") && m.contains("this model is a BertForTokenClassification"), "{m}");
}

#[test]
fn bench_runs_a_bert_folder_and_a_bert_config() {
    let (stdout, _) = ok(&["bench", "--model", &bert("tiny-bert-tokcls"), "--batch", "2", "--seq", "40", "--iters", "2"]);
    assert!(stdout.contains("tokens_per_s="), "{stdout}");
    let (stdout, _) = ok(&["bench", "--config", &bert("tiny-bert-mlm/config.json"), "--batch", "2", "--seq", "64", "--iters", "2", "--device", "gpu"]);
    assert!(stdout.contains("tokens_per_s="), "{stdout}");
    let m = fails(&["bench", "--model", &bert("tiny-bert-tokcls"), "--batch", "1", "--seq", "65"]);
    assert!(m.contains("exceeds the model's context of 64"), "{m}");
}

/// A note of ≥ 1,500 tokens through a model with 512 positions: `deid` windows it (510 content
/// tokens + [CLS] and [SEP] each, overlapping), gives one probability row per token, and covers
/// every character; the model itself refuses the whole note in one sequence.
#[test]
fn long_note_through_a_512_position_model_is_windowed() {
    let mut rng = runtime::init::Rng::new(7);
    let positions: Vec<f32> = (0..512 * 48).map(|_| 0.05 * rng.normal() as f32).collect();
    let dir = variant(
        "bert-512",
        "tiny-bert-tokcls",
        |c| c["max_position_embeddings"] = serde_json::json!(512),
        vec![("bert.embeddings.position_embeddings.weight".into(), vec![512, 48], positions)],
    );
    // Real clinical text, repeated to at least 1,500 tokens.
    let text = std::fs::read_to_string(data("aci-bench/valid.csv")).unwrap();
    let first: String = csv::Reader::from_reader(text.as_bytes()).records().next().unwrap().unwrap()[3].to_string();
    let tokenizer = runtime::tokenize::Tokenizer::from_dir(&dir).unwrap();
    let mut note = first.clone();
    while tokenizer.encode_plain(&note).unwrap().len() < 1500 {
        note.push('\n');
        note.push_str(&first);
    }
    let tokens = tokenizer.encode_plain(&note).unwrap().len();
    assert!(tokens >= 1500);

    // The library: four windows of ≤ 512 tokens; the model refuses the note as one sequence.
    let be = kernels::CpuBackend::new();
    let folder = runtime::folder::ModelFolder::open(&dir).unwrap();
    let model = runtime::Model::load(&be, folder.config, &folder.checkpoint).unwrap();
    let engine = runtime::pipeline::Engine::new(&be, &model, &tokenizer);
    assert_eq!((engine.settings.window, engine.settings.overlap), (510, 63));
    let plan = runtime::pipeline::plan(&[tokens], &engine.settings);
    assert!(plan.windows.len() >= 3 && plan.windows.iter().all(|w| w.tokens() <= 512), "{:?}", plan.windows);
    let encs = engine.tokenize(&[note.as_str()]).unwrap();
    let probs = kernels::block_on(engine.token_probabilities(&encs, &mut |_| {})).unwrap();
    assert_eq!(probs[0].len(), tokens * 5, "one probability row per token");
    let whole: Vec<u32> = std::iter::once(301).chain(encs[0].ids.iter().copied()).chain([302]).collect();
    let m = model.batch(&be, &[&whole]).err().unwrap().to_string();
    assert!(m.contains("more than the model's context of 512"), "{m}");

    // The CLI, on both devices.
    let file = dir.join("note.txt");
    std::fs::write(&file, &note).unwrap();
    for device in ["cpu", "gpu"] {
        let (stdout, stderr) = ok(&["deid", &file.display().to_string(), "--model", &dir.display().to_string(), "--device", device]);
        assert!(stderr.contains("1 longer than the 510-token window, split into overlapping windows"), "{stderr}");
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 1);
        for s in rows[0]["spans"].as_array().unwrap() {
            let (a, b) = (s["start"].as_u64().unwrap() as usize, s["end"].as_u64().unwrap() as usize);
            assert_eq!(note.chars().skip(a).take(b - a).collect::<String>(), s["text"].as_str().unwrap());
        }
    }
}

/// A folder as older clinical BERT uploads are: `pytorch_model.bin` (zip or legacy format) with
/// `vocab.txt` and no `tokenizer.json`. The check passes at 1e-4, and the commands run.
#[test]
fn pytorch_bin_and_vocab_txt_folders() {
    for folder in ["bert-torch", "bert-torch-legacy"] {
        let (stdout, _) = ok(&["check", "--model", &data(folder), "--reference", &bert("reference.safetensors")]);
        let last = stdout.lines().last().unwrap();
        let err: f32 = last.split_whitespace().next().unwrap().strip_prefix("max_abs_err=").unwrap().parse().unwrap();
        assert!(err <= kernels::tolerance::PARITY_F32 && last.ends_with("compared=16"), "{folder}:\n{stdout}");
    }
    let dir = data("bert-torch");
    let (stdout, _) = ok(&["info", "--model", &dir]);
    assert!(stdout.contains("weights: pytorch_model.bin (PyTorch zip, 60 tensors, F32 and I64)"), "{stdout}");
    assert!(stdout.contains("vocab.txt (WordPiece, 320 tokens, lowercased"), "{stdout}");
    for device in ["cpu", "gpu"] {
        let (stdout, _) = ok(&["fill-mask", "the patient reports chest [MASK].", "--model", &dir, "--device", device, "--json"]);
        assert_eq!(jsonl(&stdout).len(), 1, "{stdout}");
        let (stdout, _) = ok(&["embed", &data("mts-dialog/MTS-Dialog-ValidationSet.csv"), "--text-column", "section_text", "--model", &dir, "--device", device]);
        assert_eq!(jsonl(&stdout).len(), 100);
    }
    let m = fails(&["info", "--model", &data("bert-torch-malicious")]);
    assert!(m.contains("system") && m.contains("never runs code from a file"), "{m}");
}
