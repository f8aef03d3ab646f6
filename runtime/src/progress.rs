//! A progress line on stderr (documents, tokens/s, ETA) when stderr is a terminal, and the
//! one-line summary at the end either way.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::pipeline::Progress;

pub struct ProgressBar {
    what: &'static str,
    live: bool,
    start: Instant,
    last_draw: Option<Instant>,
    last: Progress,
}

impl ProgressBar {
    /// `what`: the verb of the summary (`embedded`, `de-identified`, `classified`).
    pub fn new(what: &'static str) -> Self {
        ProgressBar { what, live: std::io::stderr().is_terminal(), start: Instant::now(), last_draw: None, last: Progress::default() }
    }

    pub fn update(&mut self, p: Progress) {
        self.last = p;
        if !self.live || self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let rate = p.tokens_done as f64 / secs;
        let eta = if p.tokens_done > 0 { (p.tokens_total - p.tokens_done) as f64 / rate } else { f64::NAN };
        let width = 30;
        let filled = (p.tokens_done * width).checked_div(p.tokens_total).unwrap_or(0);
        eprint!(
            "\r[{}{}] {}/{} documents, {:.0} tokens/s, ETA {}   ",
            "=".repeat(filled),
            " ".repeat(width - filled),
            p.docs_done,
            p.docs_total,
            rate,
            if eta.is_finite() { format!("{:.0} s", eta) } else { "?".into() }
        );
        let _ = std::io::stderr().flush();
    }

    /// Clear the live line and print the summary, with `extra` appended.
    pub fn finish(&self, device: &str, extra: &str) {
        if self.live && self.last_draw.is_some() {
            eprint!("\r{}\r", " ".repeat(90));
        }
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!(
            "{} {} documents, {} tokens in {:.2} s ({:.0} tokens/s) on {device}{extra}",
            self.what,
            self.last.docs_total,
            self.last.tokens_total,
            secs,
            self.last.tokens_total as f64 / secs.max(1e-9)
        );
    }
}
