//! Value parsers for the command lines (`runtime-cli`, `trainer`): every number a user types is
//! range-checked when the arguments are parsed, and the message says the range. They accept
//! negative numbers (declare the argument with `allow_negative_numbers = true`) so that `-1` is
//! answered with the range instead of clap's "unexpected argument '-1' found".

/// A whole number in `lo..=hi`.
pub fn in_range(lo: u64, hi: u64) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: i128 = s.trim().parse().map_err(|_| format!("expected a whole number from {lo} to {hi}"))?;
        if v < lo as i128 || v > hi as i128 {
            return Err(format!("{v} is out of range: expected {lo} to {hi}"));
        }
        usize::try_from(v).map_err(|_| format!("{v} is more than this machine can address"))
    }
}

fn number(s: &str, what: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("expected {what}, found {s:?}"))?;
    if !v.is_finite() {
        return Err(format!("expected {what}, found {s:?}"));
    }
    Ok(v)
}

/// A probability: a number from 0 to 1.
pub fn probability(s: &str) -> Result<f32, String> {
    let v = number(s, "a probability from 0 to 1")?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is out of range: expected a probability from 0 to 1"));
    }
    Ok(v as f32)
}

/// A share of something, at least 0 and below 1.
pub fn fraction(s: &str) -> Result<f64, String> {
    let v = number(s, "a fraction from 0 to below 1")?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("{v} is out of range: expected a fraction from 0 to below 1"));
    }
    Ok(v)
}

/// A finite number above 0.
pub fn positive(s: &str) -> Result<f64, String> {
    let v = number(s, "a number above 0")?;
    if v <= 0.0 {
        return Err(format!("{v} is out of range: expected a number above 0"));
    }
    Ok(v)
}

/// A finite number, 0 or more.
pub fn non_negative(s: &str) -> Result<f64, String> {
    let v = number(s, "a number of 0 or more")?;
    if v < 0.0 {
        return Err(format!("{v} is out of range: expected a number of 0 or more"));
    }
    Ok(v)
}

/// The most CPU threads `--threads` takes.
pub const MAX_THREADS: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_the_range() {
        assert_eq!(in_range(1, 10)("0").unwrap_err(), "0 is out of range: expected 1 to 10");
        assert_eq!(in_range(1, 10)("-1").unwrap_err(), "-1 is out of range: expected 1 to 10");
        assert_eq!(in_range(1, 10)("18446744073709551616").unwrap_err(), "18446744073709551616 is out of range: expected 1 to 10");
        assert_eq!(in_range(1, 10)("x").unwrap_err(), "expected a whole number from 1 to 10");
        assert_eq!(in_range(1, 10)("7").unwrap(), 7);
        assert_eq!(probability("1.5").unwrap_err(), "1.5 is out of range: expected a probability from 0 to 1");
        assert!(probability("NaN").is_err() && probability("0.3").unwrap() == 0.3);
        assert!(fraction("1").is_err() && fraction("0").is_ok());
        assert!(positive("0").is_err() && positive("inf").is_err() && positive("2e-5").is_ok());
        assert!(non_negative("-0.1").is_err() && non_negative("0").is_ok());
    }
}
