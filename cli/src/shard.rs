//! Which share of the input this process works on: `--shard K/N`, or the scheduler's
//! environment (a Slurm job array, a Kubernetes Indexed Job). Documents are dealt out by their
//! index in the input (document `i` belongs to shard `i mod N`), so a record is never split, the
//! shards' sizes differ by one at most, and every machine computes the same assignment from the
//! input alone.

use std::fmt;

use crate::Failure;

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The most shards: far beyond any cluster, small enough that counts never overflow.
pub const MAX_SHARDS: usize = 1 << 24;

impl Shard {
    /// Does the document at `index` (0-based, in input order) belong to this shard?
    pub fn owns(&self, index: usize) -> bool {
        index % self.count == self.index
    }

    /// How many of an input's `documents` this shard holds.
    pub fn share_of(&self, documents: usize) -> usize {
        documents.saturating_sub(self.index).div_ceil(self.count)
    }

    fn new(index: usize, count: usize, what: &str) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("{what}: the number of shards must be 1 to {MAX_SHARDS}, not {count}"));
        }
        if index >= count {
            return Err(format!("{what}: shard {index} of {count} does not exist (shards are numbered 0 to {})", count - 1));
        }
        Ok(Shard { index, count })
    }
}

/// `--shard K/N`: shard K (0-based) of N.
pub fn parse(s: &str) -> Result<Shard, String> {
    let expected = || format!("expected K/N (shard K of N, K from 0 to N-1, e.g. 3/8), not {s:?}");
    let (k, n) = s.split_once('/').ok_or_else(expected)?;
    let k: usize = k.trim().parse().map_err(|_| expected())?;
    let n: usize = n.trim().parse().map_err(|_| expected())?;
    Shard::new(k, n, "--shard")
}

/// Where the shard came from, for the line printed at the start.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Slurm,
    Kubernetes,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "--shard",
            Source::Slurm => "the Slurm job array, SLURM_ARRAY_TASK_ID",
            Source::Kubernetes => "the Kubernetes Indexed Job, JOB_COMPLETION_INDEX",
        })
    }
}

/// The variable that gives a Kubernetes Indexed Job's number of completions (Kubernetes sets the
/// index but not the count; the manifest sets this to `spec.completions`), when `--shard-count`
/// does not.
pub const COUNT_VARIABLE: &str = "RUNTIME_CLI_SHARD_COUNT";

/// The shard in use: `--shard`, else a Slurm job array (`SLURM_ARRAY_TASK_ID`, `_COUNT`, `_MIN`
/// and `_STEP`), else a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with the count from
/// `--shard-count` or `RUNTIME_CLI_SHARD_COUNT`); `None` runs the whole input. `var` reads the
/// environment (a map in tests).
pub fn choose(flag: Option<Shard>, count_flag: Option<usize>, var: impl Fn(&str) -> Option<String>) -> Result<Option<(Shard, Source)>, Failure> {
    if let Some(s) = flag {
        return Ok(Some((s, Source::Flag)));
    }
    let number = |name: &str| -> Result<Option<usize>, Failure> {
        match var(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| Failure(format!("the environment variable {name}={v:?} is not a whole number"))),
        }
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let count = number("SLURM_ARRAY_TASK_COUNT")?
            .ok_or_else(|| Failure("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm 17.11 or later sets both); give --shard K/N".into()))?;
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let irregular = || {
            Failure(format!(
                "SLURM_ARRAY_TASK_ID={id} does not fit a job array of {count} tasks from {min} in steps of {step}: give the array as a range (e.g. --array=0-{}) or the shard as --shard K/N",
                count.saturating_sub(1)
            ))
        };
        if id < min || (id - min) % step != 0 {
            return Err(irregular());
        }
        let shard = Shard::new((id - min) / step, count, "the Slurm job array").map_err(|_| irregular())?;
        return Ok(Some((shard, Source::Slurm)));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = match count_flag {
            Some(n) => n,
            None => number(COUNT_VARIABLE)?.ok_or_else(|| {
                Failure(format!(
                    "JOB_COMPLETION_INDEX={index} is set (a Kubernetes Indexed Job) but not the number of completions: give --shard-count N or set {COUNT_VARIABLE} to the Job's spec.completions"
                ))
            })?,
        };
        let shard = Shard::new(index, count, "the Kubernetes Indexed Job").map_err(Failure)?;
        return Ok(Some((shard, Source::Kubernetes)));
    }
    if count_flag.is_some() {
        return Err(Failure(
            "--shard-count gives a Kubernetes Indexed Job's number of completions, but JOB_COMPLETION_INDEX is not set: give --shard K/N".into(),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flag_is_k_of_n() {
        assert_eq!(parse("3/8"), Ok(Shard { index: 3, count: 8 }));
        assert_eq!(parse("0/1"), Ok(Shard { index: 0, count: 1 }));
        for bad in ["8/8", "1/0", "3", "a/b", "-1/4", "3/8/9", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("8/8").unwrap_err().contains("numbered 0 to 7"));
    }

    #[test]
    fn every_document_is_in_exactly_one_shard() {
        for n in 1..6 {
            for docs in 0..20 {
                let shards: Vec<Shard> = (0..n).map(|k| Shard { index: k, count: n }).collect();
                for i in 0..docs {
                    assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
                }
                let total: usize = shards.iter().map(|s| s.share_of(docs)).sum();
                assert_eq!(total, docs);
                for s in &shards {
                    assert_eq!(s.share_of(docs), (0..docs).filter(|&i| s.owns(i)).count());
                }
            }
        }
    }

    #[test]
    fn slurm_arrays_from_any_first_index_and_step() {
        let got = choose(None, None, env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "3")])).ok().unwrap();
        assert_eq!(got, Some((Shard { index: 2, count: 4 }, Source::Slurm)));
        let got = choose(
            None,
            None,
            env(&[("SLURM_ARRAY_TASK_ID", "20"), ("SLURM_ARRAY_TASK_COUNT", "6"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_STEP", "4")]),
        );
        assert_eq!(got.ok().unwrap(), Some((Shard { index: 5, count: 6 }, Source::Slurm)));
        // --array=1,5,9 with COUNT 3: 9 is not the third of a range from 1.
        let irregular = choose(None, None, env(&[("SLURM_ARRAY_TASK_ID", "9"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "1")]));
        assert!(irregular.err().unwrap().0.contains("--array=0-2"));
        let missing = choose(None, None, env(&[("SLURM_ARRAY_TASK_ID", "1")]));
        assert!(missing.err().unwrap().0.contains("SLURM_ARRAY_TASK_COUNT"));
        // The flag wins over the environment.
        let flag = choose(Some(Shard { index: 0, count: 1 }), None, env(&[("SLURM_ARRAY_TASK_ID", "x")])).ok().unwrap();
        assert_eq!(flag, Some((Shard { index: 0, count: 1 }, Source::Flag)));
    }

    #[test]
    fn kubernetes_indexed_jobs_need_the_count() {
        let got = choose(None, Some(10), env(&[("JOB_COMPLETION_INDEX", "7")])).ok().unwrap();
        assert_eq!(got, Some((Shard { index: 7, count: 10 }, Source::Kubernetes)));
        let got = choose(None, None, env(&[("JOB_COMPLETION_INDEX", "7"), (COUNT_VARIABLE, "8")])).ok().unwrap();
        assert_eq!(got, Some((Shard { index: 7, count: 8 }, Source::Kubernetes)));
        assert!(choose(None, None, env(&[("JOB_COMPLETION_INDEX", "7")])).err().unwrap().0.contains(COUNT_VARIABLE));
        assert!(choose(None, Some(4), env(&[("JOB_COMPLETION_INDEX", "7")])).is_err());
        assert!(choose(None, None, env(&[("JOB_COMPLETION_INDEX", "seven")])).err().unwrap().0.contains("JOB_COMPLETION_INDEX=\"seven\""));
        assert!(choose(None, Some(4), env(&[])).is_err(), "--shard-count alone");
        assert_eq!(choose(None, None, env(&[])).ok().unwrap(), None);
    }
}
