//! The agent's configuration parser (`AgentConfig::from_toml`, TOML plus per-key validation)
//! and the value parsers it shares with the command line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::{
    agent::config::AgentConfig,
    units::{parse_bytes, parse_duration, parse_headroom},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AgentConfig::from_toml(text, "fuzz.toml") {
        Ok(config) => {
            // Validation promises these bounds to the agent.
            assert!(config.interval.as_millis() >= 100, "{config:?}");
            assert!((1..=100_000).contains(&config.max_containers), "{config:?}");
            assert!(
                (16..=65_536).contains(&config.timeline_buckets),
                "{config:?}"
            );
            assert!((0.0..=4.0).contains(&config.headroom), "{config:?}");
        }
        Err(err) => drop(err.to_string()),
    }
    // The same value syntax reaches these from flags without TOML around it.
    let _ = parse_duration(text);
    let _ = parse_headroom(text);
    let _ = parse_bytes(text);
});
