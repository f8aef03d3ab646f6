//! Where a pass spends its time on a cubecl device: every kernel launch, counted and (natively)
//! timed, grouped by kernel, and the distinct pipelines it used (a pipeline seen for the first
//! time is compiled then, which is what a first call at a new length pays for).
//!
//! Built on cubecl's launch observer, which sees each launch on the thread that issues it. Timed
//! launches run one at a time (the observer waits for each), so the per-kernel times are each
//! kernel's own cost and their sum is not the pass's wall time; counts cost nothing. In the
//! browser a wait is impossible, so there only the counts and the distinct pipelines are taken
//! and the caller times the phases around submissions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cubecl::config::{type_name_format, TypeNameFormatLevel};
use cubecl::launched::LaunchedKernels;
use cubecl::logging::{Duration, LaunchObservation, LaunchObserver, TimingMethod, TimingRequest};
use cubecl::profile::Instant;

/// One kernel's launches in a profiled pass.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    /// The kernel's name, without its module path and generics.
    pub name: String,
    pub launches: usize,
    /// Summed over its launches; `None` where launches were not timed.
    pub seconds: Option<f64>,
    /// Host time from each of its launches to the next launch (or the end of the profile), where
    /// launches were not timed: on a kernel's first launch this is mostly its compilation.
    pub host_seconds: Option<f64>,
}

/// What a profiled pass launched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelProfile {
    /// By total time (device time where timed, else host time), then by launches.
    pub kernels: Vec<KernelRow>,
    /// Distinct compiled kernels (kernel and compile-time arguments) the pass used.
    pub pipelines: usize,
    /// Those of them no earlier profile in this process used: on a first call, the pipelines
    /// compiled for it (a warm pass has none). Kernels are told apart by cubecl's stable hash.
    pub new_pipelines: usize,
    /// Every launch in order, with its host time to the next launch (or the end of the profile).
    pub timeline: Vec<(String, f64)>,
    /// Whether the times are the device's own timestamps (else the host's clock around a
    /// blocking submit, which includes the submission).
    pub device_timestamps: bool,
}

impl KernelProfile {
    pub fn launches(&self) -> usize {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    pub fn seconds(&self) -> Option<f64> {
        self.kernels.iter().map(|k| k.seconds).sum()
    }

    pub fn host_seconds(&self) -> Option<f64> {
        self.kernels.iter().map(|k| k.host_seconds).sum()
    }

    /// A Markdown table: kernel, launches, device ms and share of the summed device time where
    /// launches were timed, else host ms.
    pub fn markdown(&self) -> String {
        let timed = self.seconds().is_some();
        let total = if timed { self.seconds() } else { self.host_seconds() };
        let what = if timed { "device ms" } else { "host ms" };
        let mut s = format!("| kernel | launches | {what} | share |\n|---|---:|---:|---:|\n");
        for k in &self.kernels {
            let (ms, share) = match (if timed { k.seconds } else { k.host_seconds }, total) {
                (Some(t), Some(all)) if all > 0.0 => (format!("{:.2}", t * 1e3), format!("{:.0}%", 100.0 * t / all)),
                _ => ("–".into(), "–".into()),
            };
            s += &format!("| {} | {} | {ms} | {share} |\n", k.name, k.launches);
        }
        let ms = total.map_or("–".into(), |t| format!("{:.2}", t * 1e3));
        s += &format!("| **all ({} pipelines, {} new)** | **{}** | **{ms}** | |\n", self.pipelines, self.new_pipelines, self.launches());
        s
    }
}

#[derive(Default)]
struct Tally {
    order: Vec<String>,
    /// launches, device seconds, host seconds
    rows: HashMap<String, (usize, f64, f64)>,
    /// The last kernel launched, and when.
    last: Option<(String, Instant)>,
    timeline: Vec<(String, f64)>,
    device: bool,
    timed: bool,
}

impl Tally {
    /// Charge the host time since the last launch to that launch's kernel.
    fn close_gap(&mut self) {
        if let Some((prev, at)) = self.last.take() {
            let gap = at.elapsed().as_secs_f64();
            self.rows.entry(prev.clone()).or_default().2 += gap;
            self.timeline.push((prev, gap));
        }
    }
}

struct Observer {
    timed: bool,
    tally: Mutex<Tally>,
}

fn short(kernel: &str) -> String {
    type_name_format(kernel, TypeNameFormatLevel::Short)
}

impl LaunchObserver for Observer {
    fn launched(&self, kernel: &'static str) {
        let name = short(kernel);
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.close_gap();
        if !t.rows.contains_key(&name) {
            t.order.push(name.clone());
        }
        t.rows.entry(name.clone()).or_default().0 += 1;
        t.last = Some((name, Instant::now()));
    }

    fn timing(&self) -> TimingRequest {
        if self.timed {
            TimingRequest::Resolved
        } else {
            TimingRequest::None
        }
    }

    fn timed(&self, kernel: &'static str, duration: Duration, method: TimingMethod) {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.timed = true;
        t.device = matches!(method, TimingMethod::Device);
        t.rows.entry(short(kernel)).or_default().1 += duration.as_secs_f64();
    }
}

/// Run `f`, counting its kernel launches and, where `timed` (native targets only: timing waits
/// for each kernel), timing them. Launches from every thread are seen while `f` runs.
pub fn profile<T>(timed: bool, f: impl FnOnce() -> T) -> (T, KernelProfile) {
    let watching = Profiling::start(timed);
    let out = f();
    (out, watching.finish())
}

/// A profile that stays open across awaits (the browser, where a pass is a future): hold it
/// while the pass runs, then `finish` it.
pub struct Profiling {
    observer: Arc<Observer>,
    distinct: LaunchedKernels,
    watching: LaunchObservation,
}

impl Profiling {
    /// `timed` is ignored in wasm, where a launch cannot be waited for.
    pub fn start(timed: bool) -> Self {
        let observer = Arc::new(Observer { timed: timed && cfg!(not(target_family = "wasm")), tally: Mutex::default() });
        Profiling { distinct: LaunchedKernels::new(), watching: LaunchObservation::new(observer.clone()), observer }
    }

    pub fn finish(self) -> KernelProfile {
        drop(self.watching);
        let used = self.distinct.finish();
        let pipelines = used.len();
        let new_pipelines = {
            static SEEN: Mutex<Option<HashSet<u128>>> = Mutex::new(None);
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            let seen = seen.get_or_insert_with(HashSet::new);
            used.into_iter().filter(|h| seen.insert(*h)).count()
        };
        let mut t = std::mem::take(&mut *self.observer.tally.lock().unwrap_or_else(|p| p.into_inner()));
        t.close_gap();
        let untimed = !t.timed;
        let mut kernels: Vec<KernelRow> = t
            .order
            .iter()
            .map(|name| {
                let (launches, seconds, host) = t.rows[name];
                KernelRow { name: name.clone(), launches, seconds: t.timed.then_some(seconds), host_seconds: untimed.then_some(host) }
            })
            .collect();
        let key = |k: &KernelRow| k.seconds.or(k.host_seconds).unwrap_or(0.0);
        kernels.sort_by(|a, b| key(b).total_cmp(&key(a)).then(b.launches.cmp(&a.launches)));
        KernelProfile { kernels, pipelines, new_pipelines, timeline: t.timeline, device_timestamps: t.device }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// Two adds and a GELU are counted and timed. The observer is process-wide and other tests
    /// launch kernels meanwhile, so counts are lower bounds.
    #[test]
    fn counts_and_times_each_launch() {
        let be = crate::testing::gpu();
        let x = be.upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let ((), p) = profile(true, || {
            let y = be.add(&x, &x).unwrap();
            let y = be.add(&y, &x).unwrap();
            let z = be.gelu(&y).unwrap();
            crate::block_on(be.read(&z)).unwrap();
        });
        assert!(p.launches() >= 3 && p.kernels.len() >= 2 && p.pipelines >= 2, "{p:?}");
        assert!(p.kernels.iter().any(|k| k.launches >= 2), "{p:?}");
        assert!(p.kernels.iter().all(|k| k.seconds.is_some()) && p.seconds().is_some_and(|s| s > 0.0), "{p:?}");
        assert!(p.markdown().contains(&format!("| **{}** |", p.launches())), "{}", p.markdown());
        assert!(p.kernels.iter().all(|k| k.host_seconds.is_none()), "{p:?}");
        let ((), q) = profile(false, || {
            crate::block_on(be.read(&be.add(&x, &x).unwrap())).unwrap();
        });
        assert!(q.launches() >= 1 && q.seconds().is_none() && q.host_seconds().is_some(), "{q:?}");
    }
}
