//! Which frame names a source: the innermost frame that is the application's own code, not
//! the allocator, the C library, the Rust standard library or common collection and
//! serialization internals. `<alloc::vec::Vec<T> as SpecFromIterNested<T,I>>::from_iter`
//! makes the memory, but the function a developer changes is the one that called it.
//!
//! The list is a set of prefixes matched against a frame's module file name (`libc.so`) and
//! against its function name, with the leading `<`, `&`, `mut ` and `dyn ` of Rust trait
//! paths taken off first (so `<&mut serde_json::de::Deserializer<R> as ...>` matches
//! `serde_json::`). `--internal-frames` replaces it; the word `default` in that list stands
//! for the built-in one ([`DEFAULT_INTERNAL_FRAMES`]).

use std::sync::Arc;

use thiserror::Error;

use super::Frame;

/// Frames that never name a source unless nothing else is on the stack.
pub const DEFAULT_INTERNAL_FRAMES: &[&str] = &[
    // Allocators and the C and C++ runtimes, by module file name.
    "libc.so",
    "libc-",
    "ld-linux",
    "libjemalloc",
    "libmimalloc",
    "libtcmalloc",
    "libstdc++",
    // Allocator and C library entry points linked into the binary (static glibc, musl,
    // jemalloc as tikv-jemallocator builds it, mimalloc, tcmalloc).
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "memset",
    "memcpy",
    "memmove",
    "__mem",
    "__libc_",
    "_int_",
    "sysmalloc",
    "operator new",
    "je_",
    "_rjem_",
    "mi_",
    "_mi_",
    "tc_",
    // Rust's allocator shims and standard library.
    "__rust_",
    "__rdl_",
    "__rg_",
    "core::",
    "alloc::",
    "std::",
    // C++ standard library internals (std:: above covers the rest).
    "__gnu_cxx::",
    // Collection and serialization crates whose frames sit between the caller and malloc.
    "hashbrown::",
    "indexmap::",
    "smallvec::",
    "arrayvec::",
    "bytes::",
    "serde::",
    "serde_json::",
    "serde_yaml::",
    "bincode::",
    "prost::",
    "rmp_serde::",
    "tikv_jemallocator::",
    "tikv_jemalloc_sys::",
    "mimalloc::",
];

/// Longest list `--internal-frames` takes, and the longest prefix in it.
const MAX_PREFIXES: usize = 512;
const MAX_PREFIX_BYTES: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NamingError {
    #[error("--internal-frames has an empty entry: separate prefixes with single commas (e.g. default,tokio::)")]
    Empty,
    #[error("--internal-frames takes at most {MAX_PREFIXES} prefixes; got {0}")]
    TooMany(usize),
    #[error("--internal-frames entry of {0} bytes is longer than {MAX_PREFIX_BYTES}: give a prefix, not a whole symbol")]
    TooLong(usize),
}

/// The prefixes of frames that do not name a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalFrames {
    prefixes: Arc<[String]>,
}

impl Default for InternalFrames {
    fn default() -> Self {
        Self {
            prefixes: DEFAULT_INTERNAL_FRAMES
                .iter()
                .map(|prefix| (*prefix).to_owned())
                .collect(),
        }
    }
}

impl InternalFrames {
    /// A comma-separated list of prefixes; `default` stands for the built-in list.
    pub fn parse(list: &str) -> Result<Self, NamingError> {
        let mut prefixes = Vec::new();
        for entry in list.split(',').map(str::trim) {
            match entry {
                "" => return Err(NamingError::Empty),
                "default" => {
                    prefixes.extend(DEFAULT_INTERNAL_FRAMES.iter().map(|p| (*p).to_owned()))
                }
                prefix if prefix.len() > MAX_PREFIX_BYTES => {
                    return Err(NamingError::TooLong(prefix.len()))
                }
                prefix => prefixes.push(prefix.to_owned()),
            }
        }
        if prefixes.len() > MAX_PREFIXES {
            return Err(NamingError::TooMany(prefixes.len()));
        }
        Ok(Self {
            prefixes: prefixes.into(),
        })
    }

    /// Whether the frame is internals rather than the application's own code.
    pub fn is_internal(&self, frame: &Frame) -> bool {
        let function = frame.function.as_deref().map(path_of);
        self.prefixes.iter().any(|prefix| {
            frame.module.starts_with(prefix.as_str())
                || function.is_some_and(|name| name.starts_with(prefix.as_str()))
        })
    }

    /// The frame that names a stack: the innermost one outside the internals, else the
    /// innermost one.
    pub fn naming_frame<'a>(&self, frames: &'a [Frame]) -> Option<&'a Frame> {
        frames
            .iter()
            .find(|frame| !self.is_internal(frame))
            .or(frames.first())
    }
}

/// A Rust function name with the decorations of a trait path taken off the front:
/// `<&mut serde_json::Deserializer<R> as Trait>::f` reads `serde_json::Deserializer<R> as...`.
fn path_of(name: &str) -> &str {
    let mut rest = name;
    loop {
        let trimmed = rest
            .trim_start_matches(['<', '&', '*', ' '])
            .trim_start_matches("mut ")
            .trim_start_matches("const ")
            .trim_start_matches("dyn ");
        if trimmed.len() == rest.len() {
            return rest;
        }
        rest = trimmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: Some(Arc::from(function)),
            module: Arc::from(module),
            offset: 0,
        }
    }

    #[test]
    fn the_application_frame_names_a_rust_stack() {
        let frames = [
            frame("__memmove_avx_unaligned_erms", "libc.so.6"),
            frame("alloc::raw_vec::RawVec<T,A>::grow_one", "service"),
            frame(
                "<alloc::vec::Vec<T> as alloc::vec::spec_from_iter_nested::SpecFromIterNested<T,I>>::from_iter",
                "service",
            ),
            frame(
                "<&mut serde_json::de::Deserializer<R> as serde::de::Deserializer>::deserialize_map",
                "service",
            ),
            frame("core::ptr::drop_in_place<service::Cache>", "service"),
            frame("service::load_catalog", "service"),
            frame("service::main", "service"),
            frame("std::rt::lang_start::{{closure}}", "service"),
        ];
        let internal = InternalFrames::default();
        assert_eq!(
            internal
                .naming_frame(&frames)
                .map(Frame::display)
                .as_deref(),
            Some("service::load_catalog")
        );
        // Only internals: the innermost frame, still named.
        assert_eq!(
            internal
                .naming_frame(&frames[..2])
                .map(Frame::display)
                .as_deref(),
            Some("__memmove_avx_unaligned_erms")
        );
        // An application's own trait impl is the application's.
        assert!(!internal.is_internal(&frame(
            "<service::Config as serde::Deserialize>::deserialize",
            "service"
        )));
        // Stripped libc code is internal by its module.
        let stripped = Frame {
            function: None,
            module: Arc::from("libc.so.6"),
            offset: 0xb0a60,
        };
        assert!(internal.is_internal(&stripped));
    }

    #[test]
    fn the_list_is_replaced_or_extended() {
        let frames = [
            frame("tokio::runtime::task::harness::poll", "service"),
            frame("service::handle", "service"),
        ];
        let extended = InternalFrames::parse("default, tokio::").expect("valid");
        assert_eq!(
            extended
                .naming_frame(&frames)
                .map(Frame::display)
                .as_deref(),
            Some("service::handle")
        );
        assert!(extended.is_internal(&frame("malloc", "service")));
        let replaced = InternalFrames::parse("service::").expect("valid");
        assert!(!replaced.is_internal(&frame("malloc", "libc.so.6")));
        assert_eq!(
            replaced
                .naming_frame(&frames)
                .map(Frame::display)
                .as_deref(),
            Some("tokio::runtime::task::harness::poll")
        );
        assert_eq!(InternalFrames::parse("a,,b"), Err(NamingError::Empty));
        assert!(matches!(
            InternalFrames::parse(&"x".repeat(300)),
            Err(NamingError::TooLong(300))
        ));
        let many = vec!["p"; MAX_PREFIXES + 1].join(",");
        assert!(matches!(
            InternalFrames::parse(&many),
            Err(NamingError::TooMany(_))
        ));
    }
}
