//! What a run leaves for the people watching it: `metrics.jsonl` (one line per report, appended),
//! TensorBoard event files in `tensorboard/` (`tensorboard --logdir OUTPUT/tensorboard`), and
//! `curves.svg`, the loss and masked-token accuracy of training and evaluation against the step,
//! redrawn at each evaluation and at the end of the run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use syntaxdot_summary::SummaryWriter;

use crate::pretrain::Metrics;
use crate::{Error, Result};

/// The open logs of a run (rank 0's).
pub struct RunLog {
    jsonl_path: PathBuf,
    jsonl: File,
    tensorboard: SummaryWriter<BufWriter<File>>,
    tensorboard_dir: PathBuf,
    plot_path: PathBuf,
    /// Every report of the run so far, earlier sessions' included (read back from the JSONL).
    history: Vec<Metrics>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

impl RunLog {
    /// Open the logs under `output`, taking up an earlier session's (on resume, its reports
    /// after the checkpoint are reported again by this session and replace the old ones).
    pub fn open(output: &Path) -> Result<RunLog> {
        let jsonl_path = output.join("metrics.jsonl");
        let mut history = Vec::new();
        if jsonl_path.exists() {
            let text = runtime::files::read_text(&jsonl_path)?;
            // A session killed while writing may leave a cut last line: it is skipped.
            history.extend(text.lines().filter_map(|l| serde_json::from_str::<Metrics>(l).ok()));
        }
        let jsonl = std::fs::OpenOptions::new().create(true).append(true).open(&jsonl_path).map_err(|e| io(&jsonl_path, e))?;
        let tensorboard_dir = output.join("tensorboard");
        // One event file per session; TensorBoard reads them all.
        let tensorboard = SummaryWriter::from_prefix(tensorboard_dir.join("run")).map_err(|e| io(&tensorboard_dir, e))?;
        Ok(RunLog { jsonl_path, jsonl, tensorboard, tensorboard_dir, plot_path: output.join("curves.svg"), history })
    }

    /// Append one report to the JSONL log and the TensorBoard events.
    pub fn write(&mut self, m: &Metrics) -> Result<()> {
        writeln!(self.jsonl, "{}", serde_json::to_string(m).expect("serialisable")).map_err(|e| io(&self.jsonl_path, e))?;
        let step = m.global_step as i64;
        let split = m.split.as_str();
        let mut scalars = vec![("loss", m.loss), ("masked_accuracy", m.top1), ("top5", m.top5), ("top10", m.top10), ("top25", m.top25)];
        if split == "train" {
            scalars.extend([
                ("lr", m.lr),
                ("mask_rate", m.mask_rate),
                ("grad_norm", m.grad_norm),
                ("tokens_per_s", m.tokens_per_s),
                ("tokens", m.tokens as f64),
            ]);
            if m.ranks > 1 {
                scalars.extend([("allreduce_s_per_step", m.allreduce_s_per_step), ("allreduce_bytes_per_step", m.allreduce_bytes_per_step as f64)]);
            }
        }
        for (name, v) in scalars {
            self.tensorboard.write_scalar(format!("{split}/{name}"), step, v as f32).map_err(|e| io(&self.tensorboard_dir, e))?;
        }
        self.history.push(m.clone());
        Ok(())
    }

    /// Draw `curves.svg` from every report so far (written whole, then renamed into place).
    pub fn plot(&self) -> Result<()> {
        let tmp = self.plot_path.with_extension("svg.tmp");
        draw(&tmp, &self.history).map_err(|e| Error::Input(format!("{}: cannot draw the plot ({e})", self.plot_path.display())))?;
        std::fs::rename(&tmp, &self.plot_path).map_err(|e| io(&self.plot_path, e))
    }
}

/// The points of one split: (global step, loss, masked accuracy), the latest report of each
/// step (a resumed session reports again the steps after its checkpoint).
fn series(history: &[Metrics], split: &str) -> Vec<(u64, f64, f64)> {
    let mut by_step = std::collections::BTreeMap::new();
    for m in history.iter().filter(|m| m.split == split) {
        by_step.insert(m.global_step, (m.loss, m.top1));
    }
    by_step.into_iter().map(|(s, (l, a))| (s, l, a)).collect()
}

fn draw(path: &Path, history: &[Metrics]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (train, eval) = (series(history, "train"), series(history, "eval"));
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let last = train.iter().chain(&eval).map(|p| p.0).max().unwrap_or(1).max(1);
    let top = train.iter().chain(&eval).map(|p| p.1).filter(|l| l.is_finite()).fold(0.0f64, f64::max).max(1e-3) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("masked-LM loss and accuracy", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0u64..last, 0f64..top)?
        .set_secondary_coord(0u64..last, 0f64..1f64);
    chart.configure_mesh().x_desc("step").y_desc("loss").draw()?;
    chart.configure_secondary_axes().y_desc("masked-token accuracy (top-1)").draw()?;
    let lines: [(&[(u64, f64, f64)], &str, RGBColor); 2] = [(&train, "train", RED), (&eval, "eval", BLUE)];
    for (points, name, color) in lines {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label(format!("{name} loss"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), color.mix(0.6).stroke_width(1)))?
            .label(format!("{name} accuracy"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.6)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
