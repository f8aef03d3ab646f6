//! PyTorch checkpoints (`pytorch_model.bin`), as many clinical BERT models are published: the zip
//! format and the legacy (pre-1.6) format load to exactly the tensors of `model.safetensors`,
//! shards load through `pytorch_model.bin.index.json`, and a pickle that names anything but the
//! tensor-rebuilding functions is refused without running it.

use runtime::weights::Checkpoint;
use workspace_tests::{bert_fixture, data, scratch};

fn same_tensors(bin: &Checkpoint, reference: &Checkpoint) {
    for name in reference.names() {
        let (a, b) = (bin.get(name).unwrap_or_else(|| panic!("{name} missing")), reference.get(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{name}");
        assert_eq!(a.bytes, b.bytes, "{name}");
    }
    // What the .bin adds: BertForPreTraining-style extras a loader must tolerate.
    let mut extra: Vec<&str> = bin.names().filter(|n| !reference.contains(n)).collect();
    extra.sort();
    assert_eq!(extra, ["bert.embeddings.position_ids", "cls.predictions.decoder.weight"]);
    let tied = bin.get("cls.predictions.decoder.weight").unwrap();
    assert_eq!(tied.bytes, reference.get("bert.embeddings.word_embeddings.weight").unwrap().bytes, "the tied decoder shares the embedding's storage");
    let positions = bin.get("bert.embeddings.position_ids").unwrap();
    assert_eq!(positions.shape, [1, 64]);
    assert_eq!(positions.to_i64().unwrap(), (0..64).collect::<Vec<i64>>());
}

#[test]
fn zip_and_legacy_formats_give_the_safetensors_tensors() {
    let reference = Checkpoint::open_dir(&bert_fixture("tiny-bert-mlm")).unwrap();
    for folder in ["bert-torch", "bert-torch-legacy"] {
        let bin = Checkpoint::open_dir(&data(folder)).unwrap();
        same_tensors(&bin, &reference);
        // From bytes (the browser) too, sniffed by content.
        let bytes = std::fs::read(data(folder).join("pytorch_model.bin")).unwrap();
        same_tensors(&Checkpoint::from_bytes(vec![("pytorch_model.bin".into(), bytes)]).unwrap(), &reference);
    }
}

#[test]
fn sharded_bin_loads_through_its_index() {
    let dir = scratch("torch-shards");
    std::fs::copy(data("bert-torch/pytorch_model.bin"), dir.join("pytorch_model-00001-of-00001.bin")).unwrap();
    let single = Checkpoint::open_dir(&data("bert-torch")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = single.names().map(|n| (n.to_string(), "pytorch_model-00001-of-00001.bin".into())).collect();
    std::fs::write(dir.join("pytorch_model.bin.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    let sharded = Checkpoint::open_dir(&dir).unwrap();
    assert_eq!(sharded.names().count(), single.names().count());
    assert!(sharded.describe().contains("PyTorch zip"), "{}", sharded.describe());
    // No weights at all: the message lists every file looked for.
    let empty = scratch("torch-none");
    let m = Checkpoint::open_dir(&empty).err().unwrap().to_string();
    assert!(m.contains("model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json"), "{m}");
}

/// The malicious file's pickle calls `os.system("touch …")` when unpickled by Python: we refuse
/// it at the global, name it, and nothing runs.
#[test]
fn a_pickle_naming_os_system_is_refused() {
    let marker = std::path::Path::new("/tmp/SHOULD_NOT_EXIST_torch_pickle");
    let _ = std::fs::remove_file(marker);
    let m = Checkpoint::open_dir(&data("bert-torch-malicious")).err().unwrap().to_string();
    assert!(m.contains("pytorch_model.bin") && m.contains("system") && m.contains("never runs code"), "{m}");
    assert!(!marker.exists());
    let folder = runtime::folder::ModelFolder::open(&data("bert-torch-malicious")).err().unwrap().to_string();
    assert!(folder.contains("system"), "{folder}");
}

/// Every cut of a valid file is an error, never a panic.
#[test]
fn truncated_bins_are_errors() {
    for folder in ["bert-torch", "bert-torch-legacy"] {
        let bytes = std::fs::read(data(folder).join("pytorch_model.bin")).unwrap();
        for k in 1..64 {
            let cut = bytes[..bytes.len() * k / 64].to_vec();
            assert!(Checkpoint::from_bytes(vec![("cut.bin".into(), cut)]).is_err(), "{folder} cut at {k}/64 loaded");
        }
    }
}
