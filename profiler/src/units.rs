//! Units: parsing of durations, sizes and fractions as users write them on the command line,
//! and formatting of bytes for people (`192.0 MiB`) and for Kubernetes (`410Mi`). A leaf module:
//! everything else may use it, it uses nothing of the crate.

use std::time::Duration;

pub const MIB: u64 = 1 << 20;

pub fn parse_bytes_within(text: &str, low: u64, high: u64) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes < low || bytes > high {
        return Err(format!(
            "{text} is out of range: use {} to {}",
            format_bytes(low),
            format_bytes(high)
        ));
    }
    Ok(bytes)
}

/// Parses `30s`, `500ms`, `5m`, `1h`, `1.5s`; zero and negative durations are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 30s, 500ms, 5m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number: write e.g. 30s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    if !(seconds > 0.0 && seconds.is_finite() && seconds <= 31.0 * 24.0 * 3600.0) {
        return Err(format!(
            "`{text}` is out of range: a duration must be more than 0 and at most 31 days"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a size in Kubernetes notation (`256Mi`, `1Gi`, `500M`, `1048576`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes < 4 << 20 {
        return Err(format!(
            "`{}` is below 4Mi: no real program starts in that little memory",
            text.trim()
        ));
    }
    Ok(bytes)
}

/// Parses a size in Kubernetes notation, any value.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 256Mi, 1Gi or 1048576"))?;
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use Ki, Mi, Gi, Ti, k, M or G"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a look-back window: like a duration, and also in days (`7d`).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .map(|d| Duration::from_secs(d * 86_400))
            .ok_or_else(|| format!("`{text}`: days must be 1 to 365")),
        None => parse_duration(text),
    }
}

/// Parses a headroom fraction: `0.25` or `25%`, from 0 to 400 %.
pub fn parse_headroom(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a fraction or a percentage: write e.g. 0.25 or 25%"))?;
    if !(0.0..=4.0).contains(&value) {
        return Err(format!(
            "`{text}` is out of range: headroom must be 0 to 400 %"
        ));
    }
    Ok(value)
}

/// Binary units with one decimal: `192.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn format_optional(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), format_bytes)
}

/// Quotes an argument for display the way a POSIX shell would need it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

pub fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Rounds up to whole MiB.
pub fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).saturating_mul(MIB)
}

/// Kubernetes notation in Mi (`410Mi`).
pub fn quantity(bytes: u64) -> String {
    format!("{}Mi", round_up_mib(bytes) / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(192 << 20), "192.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn quotes_arguments_for_display() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("/bin/x=1"), "/bin/x=1");
        assert_eq!(shell_quote("sleep 30 & echo"), "'sleep 30 & echo'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn durations_parse_with_units_and_clear_errors() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10")
            .expect_err("no unit")
            .contains("no unit"));
        assert!(parse_duration("0s")
            .expect_err("zero")
            .contains("more than 0"));
        assert!(parse_duration("5y")
            .expect_err("unit")
            .contains("unknown unit"));
        assert!(parse_duration("s").expect_err("number").contains("number"));
    }

    #[test]
    fn headroom_parses_as_fraction_or_percentage() {
        assert_eq!(parse_headroom("25%"), Ok(0.25));
        assert_eq!(parse_headroom("0.3"), Ok(0.3));
        assert!(parse_headroom("-5%").is_err());
        assert!(parse_headroom("lots")
            .expect_err("word")
            .contains("0.25 or 25%"));
    }

    #[test]
    fn quantities_round_up_to_whole_mebibytes() {
        assert_eq!(quantity(MIB), "1Mi");
        assert_eq!(quantity(MIB + 1), "2Mi");
        assert_eq!(quantity(0), "0Mi");
    }
}
