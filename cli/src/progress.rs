//! A progress line on stderr (documents, tokens/s, how much of the input is read) when stderr is
//! a terminal, and the one-line summary at the end either way. Input is processed in chunks of
//! documents: the line adds the finished chunks to the progress of the current one.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use runtime::pipeline::Progress;

pub struct ProgressBar {
    what: &'static str,
    live: bool,
    start: Instant,
    last_draw: Option<Instant>,
    /// Documents and tokens of the chunks finished.
    docs: usize,
    tokens: usize,
    /// The current chunk.
    current: Progress,
    /// Share of the input read, when its size is known.
    fraction: Option<f64>,
}

impl ProgressBar {
    /// `what`: the verb of the summary (`embedded`, `de-identified`, `classified`).
    pub fn new(what: &'static str) -> Self {
        ProgressBar {
            what,
            live: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_draw: None,
            docs: 0,
            tokens: 0,
            current: Progress::default(),
            fraction: None,
        }
    }

    /// A new chunk starts; `fraction`: how much of the input has been read with it.
    pub fn begin_chunk(&mut self, fraction: Option<f64>) {
        self.fraction = fraction;
        self.current = Progress::default();
    }

    /// Progress within the current chunk.
    pub fn update(&mut self, p: Progress) {
        self.current = p;
        if !self.live || self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let tokens = self.tokens + p.tokens_done;
        let rate = tokens as f64 / secs;
        let read = self.fraction.map(|f| format!(", {:.0}% of the input read", 100.0 * f)).unwrap_or_default();
        eprint!("\r{} documents, {:.0} tokens/s{read}   ", self.docs + p.docs_done, rate);
        let _ = std::io::stderr().flush();
    }

    /// The current chunk is done.
    pub fn end_chunk(&mut self) {
        self.docs += self.current.docs_total;
        self.tokens += self.current.tokens_total;
        self.current = Progress::default();
    }

    /// Clear the live line and print the summary, with `extra` appended.
    pub fn finish(&self, device: &str, extra: &str) {
        if self.live && self.last_draw.is_some() {
            eprint!("\r{}\r", " ".repeat(90));
        }
        let secs = self.start.elapsed().as_secs_f64();
        let (docs, tokens) = (self.docs + self.current.docs_total, self.tokens + self.current.tokens_total);
        eprintln!("{} {docs} documents, {tokens} tokens in {secs:.2} s ({:.0} tokens/s) on {device}{extra}", self.what, tokens as f64 / secs.max(1e-9));
    }
}
