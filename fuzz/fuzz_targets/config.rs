//! `config.json`: any bytes either parse into a config whose sizes are within the documented
//! bounds, or give an error naming the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::config::{MAX_CONTEXT, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_VOCAB, MIN_CONTEXT};
use runtime::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ModelConfig::from_json("config.json", &text) {
        Ok(c) => {
            assert!((MIN_CONTEXT..=MAX_CONTEXT).contains(&c.context()));
            assert!((1..=MAX_VOCAB).contains(&c.vocab_size()));
            assert!((1..=MAX_HIDDEN).contains(&c.hidden_size()));
            assert!((1..=MAX_INTERMEDIATE).contains(&c.intermediate_size()));
            assert!((1..=MAX_LAYERS).contains(&c.num_hidden_layers()));
            assert_eq!(c.hidden_size() % c.num_attention_heads(), 0);
            let labels = c.labels();
            for (i, l) in labels.iter().enumerate() {
                assert!(!l.trim().is_empty() && !labels[..i].contains(l));
            }
            // Sizes that cannot overflow, and a memory check that answers.
            let _ = c.parameter_count();
            let _ = c.useful_flops(1, c.context().min(64));
            let _ = c.ensure_fits();
        }
        Err(e) => assert!(e.to_string().starts_with("config.json: ")),
    }
});
