//! PyTorch's `pytorch_model.bin` (zip or legacy pickle): the safe reader either rebuilds tensors
//! whose bytes lie inside the file, or refuses with a message; it never runs anything and never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::torch::{read, TorchData};

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = read(data, "pytorch_model.bin") {
        for t in tensors {
            if let TorchData::Range(r) = t.data {
                assert!(r.start <= r.end && r.end <= data.len());
            }
        }
    }
});
