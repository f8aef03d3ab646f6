//! The `web` crate in the browser (wasm-bindgen-test in headless Chromium): loading from bytes,
//! clear errors for incomplete folders and models without a token-classification head, and the
//! same spans on WebGPU (when the browser offers it) as on the CPU backend compiled to wasm.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;
use web::DeidModel;

wasm_bindgen_test_configure!(run_in_browser);

const NOTE: &str = "Physician Discharge Summary Admit date: 10/12/1982. Patient Jack Reacher, 54 y.o. male, seen by Roger C Kelly, MD; metoprolol 25 mg daily.";

fn files(folder: &[(&str, &[u8])]) -> js_sys::Map {
    let m = js_sys::Map::new();
    for (name, bytes) in folder {
        m.set(&JsValue::from_str(name), &js_sys::Uint8Array::from(*bytes));
    }
    m
}

macro_rules! file {
    ($dir:literal, $name:literal) => {
        ($name, &include_bytes!(concat!("../../tests/", $dir, "/", $name))[..])
    };
}

macro_rules! fixture {
    ($dir:literal, $name:literal) => {
        ($name, &include_bytes!(concat!("../../tests/fixtures/", $dir, "/", $name))[..])
    };
}

fn tokcls() -> Vec<(&'static str, &'static [u8])> {
    vec![
        fixture!("tiny-modernbert-tokcls", "config.json"),
        fixture!("tiny-modernbert-tokcls", "model.safetensors"),
        fixture!("tiny-modernbert-tokcls", "tokenizer.json"),
        fixture!("tiny-modernbert-tokcls", "tokenizer_config.json"),
    ]
}

async fn load_err(folder: &[(&str, &[u8])]) -> String {
    match DeidModel::load(files(folder), "cpu".into()).await {
        Ok(_) => panic!("loaded"),
        Err(e) => JsValue::from(e).dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_default(),
    }
}

/// Load `folder` on the CPU backend and with `auto` (WebGPU here), run NOTE through both and
/// check they redact it alike; returns the `auto` model's info, with the spans under "spans".
async fn cpu_and_auto_agree(folder: &[(&str, &[u8])]) -> serde_json::Value {
    let cpu = DeidModel::load(files(folder), "cpu".into()).await.map_err(JsValue::from).unwrap();
    let auto = DeidModel::load(files(folder), "auto".into()).await.map_err(JsValue::from).unwrap();
    let info: serde_json::Value = serde_json::from_str(&auto.info()).unwrap();
    let a = cpu.analyze_note(NOTE.into()).await.unwrap();
    let b = auto.analyze_note(NOTE.into()).await.unwrap();
    assert!(a.tokens() > 20);
    let (ra, rb) = (a.result(0.3, false).map_err(JsValue::from).unwrap(), b.result(0.3, false).map_err(JsValue::from).unwrap());
    let (ja, jb): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&ra).unwrap(), serde_json::from_str(&rb).unwrap());
    assert_eq!(ja["redacted"], jb["redacted"], "{info}");
    assert!(a.result(1.5, false).is_err(), "a threshold above 1 is refused");
    let mut info = info;
    info["spans"] = ja["spans"].clone();
    info
}

#[wasm_bindgen_test]
async fn incomplete_folders_and_wrong_heads_are_named() {
    let mut no_tokenizer = tokcls();
    no_tokenizer.retain(|(n, _)| *n != "tokenizer.json");
    let m = load_err(&no_tokenizer).await;
    assert!(m.contains("no tokenizer: expected tokenizer.json, or vocab.txt (WordPiece), or vocab.json with merges.txt"), "{m}");
    let mut no_weights = tokcls();
    no_weights.retain(|(n, _)| *n != "model.safetensors");
    assert!(load_err(&no_weights).await.contains("no model.safetensors and no pytorch_model.bin"));
    let mlm = [
        fixture!("tiny-modernbert-mlm", "config.json"),
        fixture!("tiny-modernbert-mlm", "model.safetensors"),
        fixture!("tiny-modernbert-mlm", "tokenizer.json"),
    ];
    assert!(load_err(&mlm).await.contains("token-classification head"));
}

#[wasm_bindgen_test]
async fn webgpu_and_cpu_give_the_same_spans() {
    let info = cpu_and_auto_agree(&tokcls()).await;
    // webdriver.json enables WebGPU (SwiftShader): `auto` must have taken it.
    assert_eq!(info["backend"], "wgpu", "{info}");
    assert!(!info["spans"].as_array().unwrap().is_empty());
}

/// Classic BERT folders: the fixture token classifier with its tokenizer.json, and the same
/// weights with a WordPiece vocab.txt (no tokenizer.json), both de-identify on WebGPU and on the
/// CPU alike; a PyTorch pytorch_model.bin is read (the MLM-only file then lacks the head).
#[wasm_bindgen_test]
async fn classic_bert_folders() {
    let bert = vec![
        file!("fixtures-bert/tiny-bert-tokcls", "config.json"),
        file!("fixtures-bert/tiny-bert-tokcls", "model.safetensors"),
        file!("fixtures-bert/tiny-bert-tokcls", "tokenizer.json"),
        file!("fixtures-bert/tiny-bert-tokcls", "tokenizer_config.json"),
    ];
    let wordpiece = vec![
        file!("fixtures-bert/tiny-bert-tokcls", "config.json"),
        file!("fixtures-bert/tiny-bert-tokcls", "model.safetensors"),
        file!("data/bert-wordpiece", "vocab.txt"),
        file!("data/bert-wordpiece", "tokenizer_config.json"),
    ];
    for folder in [&bert, &wordpiece] {
        let info = cpu_and_auto_agree(folder).await;
        assert!(info["architecture"].as_str().unwrap().starts_with("BertForTokenClassification"), "{info}");
        assert_eq!(info["context"], 64);
        assert_eq!(info["backend"], "wgpu", "{info}");
    }
    let torch = [
        file!("data/bert-torch", "config.json"),
        file!("data/bert-torch", "pytorch_model.bin"),
        file!("data/bert-torch", "vocab.txt"),
        file!("data/bert-torch", "tokenizer_config.json"),
    ];
    assert!(load_err(&torch).await.contains("token-classification head"));
    let malicious = [file!("data/bert-torch-malicious", "config.json"), file!("data/bert-torch", "vocab.txt"), file!("data/bert-torch-malicious", "pytorch_model.bin")];
    assert!(load_err(&malicious).await.contains("never runs code from a file"));
}
