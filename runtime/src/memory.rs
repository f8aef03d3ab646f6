//! How much memory this machine can still give, and the check every allocation sized by user
//! input goes through first: a config, an argument or a document that asks for more than the
//! machine holds is refused with the figures, instead of aborting in the allocator.

use crate::{Error, Result};

/// Bytes this process can still allocate: the smaller of Linux's `MemAvailable` and the room left
/// under a cgroup v2 limit (containers); a wasm32 module can address 4 GiB in all. `None` where
/// neither is known (no check is made there).
pub fn available() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(4 << 30)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).map(|kb| kb * 1024)
        });
        let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let cgroup = match (read("memory.max"), read("memory.current")) {
            (Some(max), Some(current)) => Some(max.saturating_sub(current)),
            _ => None,
        };
        match (meminfo, cgroup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Bytes as GiB or MiB, for messages.
pub fn human(bytes: u128) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Refuse `bytes` (what `what` needs) when it is more than the machine can give; `how` says how
/// to ask for less. Counts are u128 so that no product of user-given sizes overflows on the way.
pub fn ensure_fits(what: &str, bytes: u128, how: &str) -> Result<()> {
    ensure_fits_in(what, bytes, how, available())
}

fn ensure_fits_in(what: &str, bytes: u128, how: &str, available: Option<u64>) -> Result<()> {
    // Beyond any machine's address space, whatever /proc says.
    let limit = available.map_or(1u128 << 48, |a| (a as u128).min(1 << 48));
    if bytes > limit {
        let have = match available {
            Some(a) => format!("but this machine has {} available", human(a as u128)),
            None => "more than any machine can address".to_string(),
        };
        return Err(Error::Input(format!("{what} would take {} of memory, {have}; {how}", human(bytes))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_does_not_fit() {
        assert!(ensure_fits_in("x", 1 << 20, "", Some(2 << 20)).is_ok());
        let m = ensure_fits_in("the model's weights", 3 << 30, "use a smaller model", Some(2 << 30)).unwrap_err().to_string();
        assert_eq!(m, "the model's weights would take 3.0 GiB of memory, but this machine has 2.0 GiB available; use a smaller model");
        assert!(ensure_fits_in("x", 1 << 50, "", None).is_err());
        #[cfg(target_os = "linux")]
        assert!(available().is_some_and(|a| a > 0));
    }
}
