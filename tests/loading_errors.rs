//! Broken model folders give errors that name the file and the field or tensor, never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use kernels::testing;
use runtime::folder::ModelFolder;
use runtime::weights::{serialize_f32, Checkpoint};
use runtime::ModernBert;
use workspace_tests::{fixture, scratch};

/// A copy of the tiny MLM folder to break.
fn copy_folder(name: &str) -> PathBuf {
    let dir = scratch(name);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        fs::copy(fixture("tiny-modernbert-mlm").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let be = testing::cpu();
    match ModelFolder::open(dir) {
        Err(e) => e.to_string(),
        Ok(folder) => match runtime::Model::load(&be, folder.config, &folder.checkpoint) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{} loaded", dir.display()),
        },
    }
}

#[test]
fn truncated_safetensors() {
    let dir = copy_folder("truncated");
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let m = load_error(&dir);
    assert!(m.contains("model.safetensors: tensor \"") && m.contains("run past the end of the data") && m.contains("truncated or corrupt"), "{m}");
    fs::write(dir.join("model.safetensors"), &bytes[..5]).unwrap();
    let m = load_error(&dir);
    assert!(m.contains("model.safetensors: 5 bytes, too short for a safetensors header"), "{m}");
}

#[test]
fn header_lies_about_offsets() {
    let dir = copy_folder("lying_header");
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(header).unwrap();
    // Shift one tensor's end past its neighbour's start.
    let offsets = &mut v["decoder.bias"]["data_offsets"];
    let end = offsets[1].as_u64().unwrap();
    offsets[1] = serde_json::json!(end + 8);
    let mut new_header = v.to_string().into_bytes();
    while new_header.len() < n {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(dir.join("model.safetensors"), out).unwrap();
    // Before: "invalid shape, data type, or offset for tensor" (which tensor?).
    let m = load_error(&dir);
    assert!(m.contains("model.safetensors: tensor \"decoder.bias\": shape [320] of F32 needs 1280 bytes, but its data_offsets"), "{m}");
}

/// Rewrite the folder's checkpoint through `edit`.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let ckpt = Checkpoint::open_file(&dir.join("model.safetensors")).unwrap();
    let mut names: Vec<String> = ckpt.names().map(str::to_string).collect();
    names.sort();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        names.iter().map(|n| { let t = ckpt.get(n).unwrap(); (n.clone(), t.shape.to_vec(), t.to_f32().unwrap()) }).collect();
    drop(ckpt);
    edit(&mut tensors);
    fs::write(dir.join("model.safetensors"), serialize_f32(&tensors, None).unwrap()).unwrap();
}

#[test]
fn missing_tensor() {
    let dir = copy_folder("missing_tensor");
    rewrite(&dir, |t| t.retain(|(n, _, _)| n != "model.layers.2.mlp.Wi.weight"));
    let m = load_error(&dir);
    assert!(m.contains("model.safetensors") && m.contains("missing tensor \"model.layers.2.mlp.Wi.weight\""), "{m}");
}

#[test]
fn wrong_shape() {
    let dir = copy_folder("wrong_shape");
    rewrite(&dir, |t| {
        let w = t.iter_mut().find(|(n, _, _)| n == "model.layers.1.attn.Wqkv.weight").unwrap();
        w.1 = vec![48, 144];
    });
    let m = load_error(&dir);
    assert!(m.contains("model.safetensors") && m.contains("\"model.layers.1.attn.Wqkv.weight\" has shape [48, 144], expected [144, 48]"), "{m}");
}

#[test]
fn config_field_of_the_wrong_type() {
    let dir = copy_folder("config_type");
    let text = fs::read_to_string(dir.join("config.json")).unwrap().replace("\"num_attention_heads\": 4", "\"num_attention_heads\": \"four\"");
    fs::write(dir.join("config.json"), text).unwrap();
    let m = load_error(&dir);
    assert!(m.contains("config.json: field \"num_attention_heads\": expected a non-negative integer, found \"four\""), "{m}");
}

#[test]
fn tokenizer_disagrees_with_config() {
    let dir = copy_folder("tokenizer_mismatch");
    let text = fs::read_to_string(dir.join("config.json")).unwrap().replace("\"sep_token_id\": 302", "\"sep_token_id\": 301");
    fs::write(dir.join("config.json"), text).unwrap();
    let m = load_error(&dir);
    assert!(m.contains("tokenizer.json: special token \"[SEP]\" has id 302") && m.contains("config.json field \"sep_token_id\" is 301"), "{m}");
}

#[test]
fn f16_and_bf16_checkpoints_load() {
    // The same weights stored in half precision load and run (values widened exactly).
    let src = Checkpoint::open_file(&fixture("tiny-modernbert-mlm/model.safetensors")).unwrap();
    let be = testing::cpu();
    let config = runtime::ModernBertConfig::from_file(&fixture("tiny-modernbert-mlm/config.json")).unwrap();
    let f32_model = ModernBert::load(&be, config.clone(), &src).unwrap();
    let _ = f32_model;
    for dtype in ["F16", "BF16"] {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        let mut names: Vec<&str> = src.names().collect();
        names.sort();
        for n in names {
            let t = src.get(n).unwrap();
            let start = data.len();
            for v in t.to_f32().unwrap() {
                let bits = if dtype == "F16" { half_bits_f16(v) } else { half_bits_bf16(v) };
                data.extend_from_slice(&bits.to_le_bytes());
            }
            header.insert(n.to_string(), serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [start, data.len()]}));
        }
        let h = serde_json::Value::Object(header).to_string();
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&data);
        let ckpt = Checkpoint::from_bytes(vec![(format!("{dtype}.safetensors"), bytes)]).unwrap();
        assert_eq!(ckpt.get("decoder.bias").unwrap().dtype, if dtype == "F16" { runtime::weights::StoredDtype::F16 } else { runtime::weights::StoredDtype::BF16 });
        ModernBert::load(&be, config.clone(), &ckpt).unwrap();
    }
}

fn half_bits_f16(v: f32) -> u16 {
    // Round-to-nearest-even f32 → f16 for normal values in the fixture's range.
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    let mant = bits & 0x7f_ffff;
    let mut h = sign as u32 | ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    h as u16
}

fn half_bits_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    ((bits + round) >> 16) as u16
}

#[test]
fn sharded_checkpoint_and_prefixless_names() {
    // Split the tokcls checkpoint into two shards with an index, and strip the `model.` prefix
    // (a bare ModernBertModel checkpoint): both load and run.
    let dir = scratch("sharded");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        fs::copy(fixture("tiny-modernbert-tokcls").join(f), dir.join(f)).unwrap();
    }
    let src = Checkpoint::open_file(&fixture("tiny-modernbert-tokcls/model.safetensors")).unwrap();
    let mut names: Vec<String> = src.names().map(str::to_string).collect();
    names.sort();
    let all: Vec<(String, Vec<usize>, Vec<f32>)> = names.iter().map(|n| { let t = src.get(n).unwrap(); (n.clone(), t.shape.to_vec(), t.to_f32().unwrap()) }).collect();
    let (a, b) = all.split_at(all.len() / 2);
    fs::write(dir.join("model-00001-of-00002.safetensors"), serialize_f32(a, None).unwrap()).unwrap();
    fs::write(dir.join("model-00002-of-00002.safetensors"), serialize_f32(b, None).unwrap()).unwrap();
    let mut map = serde_json::Map::new();
    for (n, _, _) in a {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _, _) in b {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    let be = testing::cpu();
    let model = runtime::Model::load(&be, folder.config, &folder.checkpoint).unwrap();
    assert!(model.has_classifier());

    // An index that points at a missing shard names it.
    fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let m = load_error(&dir);
    assert!(m.contains("model-00002-of-00002.safetensors"), "{m}");

    // Bare encoder names (no `model.` prefix) load as a ModernBertModel.
    let bare: Vec<(String, Vec<usize>, Vec<f32>)> =
        all.iter().filter_map(|(n, s, v)| n.strip_prefix("model.").map(|n| (n.to_string(), s.clone(), v.clone()))).collect();
    let ckpt = Checkpoint::from_bytes(vec![("bare.safetensors".into(), serialize_f32(&bare, None).unwrap())]).unwrap();
    let mut config = runtime::ModernBertConfig::from_file(&dir.join("config.json")).unwrap();
    config.architecture = Some(runtime::config::Architecture::Model);
    let model = ModernBert::load(&be, config, &ckpt).unwrap();
    assert!(model.classifier.is_none() && model.head.is_none());
}
