//! The cgroup-path parser (`attribution::paths::parse_cgroup_path`): paths come from
//! /proc/PID/cgroup and from `--cgroup`, so any text must give an identity or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler::attribution::paths::parse_cgroup_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match parse_cgroup_path(path) {
        Ok(identity) => {
            // What the parser promises to callers, who use these as map keys and labels.
            assert_eq!(identity.pod_uid.len(), 36, "{path:?}: {identity:?}");
            if let Some(id) = &identity.container_id {
                assert!(
                    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{path:?}: {identity:?}"
                );
            }
            assert_eq!(
                identity.container_id.is_some(),
                identity.runtime.is_some(),
                "{path:?}"
            );
        }
        // Errors are shown to users: rendering them must not panic either.
        Err(err) => drop(err.to_string()),
    }
});
