//! Weight files as the browser and the loader get them: a safetensors header (or a PyTorch file,
//! which the same entry point sniffs) either indexes tensors whose bytes lie inside the file and
//! overlap no other, or gives an error naming the file; reading every tensor never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::weights::{safetensors_header, Checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = safetensors_header(data) {
        let mut ranges: Vec<_> = entries.iter().map(|e| e.range.clone()).filter(|r| !r.is_empty()).collect();
        ranges.sort_by_key(|r| r.start);
        for r in &ranges {
            assert!(r.end <= data.len());
        }
        for w in ranges.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }
    match Checkpoint::from_bytes(vec![("model.safetensors".into(), data.to_vec())]) {
        Ok(ckpt) => {
            let names: Vec<String> = ckpt.names().map(str::to_string).collect();
            for n in names {
                let t = ckpt.get(&n).expect("listed");
                let elements: usize = t.shape.iter().product();
                match t.to_f32() {
                    Ok(v) => assert_eq!(v.len(), elements),
                    Err(e) => assert!(e.to_string().contains(&n)),
                }
                let _ = ckpt.f32(&n, &t.shape.to_vec());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("model.safetensors: ")),
    }
});
