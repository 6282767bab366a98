//! pprof export (`--pprof FILE`): the session's symbolized stacks as a gzipped `profile.proto`,
//! the format `go tool pprof`, Pyroscope and Parca read.
//!
//! The messages are declared here by hand with prost's derive (the schema is small and stable:
//! github.com/google/pprof/blob/main/proto/profile.proto), so no protoc runs at build time.
//! Values per sample, in this order: `faulted` bytes (resident memory made, from byte-weighted
//! samples: the report's `resident_bytes` per stack), `reserved` bytes (large mmap/brk calls:
//! the report's `reserved_bytes`) and the `samples` count. `faulted` is the default type.
//!
//! Locations are per module and file offset (stacks of several processes are merged, so
//! addresses would not mean anything); each module is one mapping whose addresses are file
//! offsets. Frames that were not symbolized keep their location without a function, which
//! pprof shows as the module and offset.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flate2::{write::GzEncoder, Compression};
use prost::Message;
use thiserror::Error;

use super::{Frame, StackProfile};

#[derive(Debug, Error)]
pub enum PprofError {
    #[error("no stacks were sampled, so there is no pprof profile to write (was the target idle, or stack sampling off?)")]
    NoStacks,
    #[error("writing the pprof profile {path} failed")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The subset of profile.proto headroom fills in; field numbers are the schema's.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Innermost first, as in our stacks.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Interns strings, functions, mappings and locations; ids are 1-based, 0 means none.
#[derive(Default)]
struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<Arc<str>, u64>,
    mappings: HashMap<Arc<str>, usize>,
    locations: HashMap<Frame, u64>,
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn function(&mut self, name: &Arc<str>) -> u64 {
        if let Some(&id) = self.functions.get(name) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name_index = self.string(name);
        self.profile.function.push(proto::Function {
            id,
            name: name_index,
            system_name: name_index,
            filename: 0,
        });
        self.functions.insert(name.clone(), id);
        id
    }

    fn mapping(&mut self, module: &Arc<str>, offset: u64, symbolized: bool) -> u64 {
        let index = match self.mappings.get(module) {
            Some(&index) => index,
            None => {
                let filename = self.string(module);
                let index = self.profile.mapping.len();
                self.profile.mapping.push(proto::Mapping {
                    id: index as u64 + 1,
                    memory_start: 0,
                    memory_limit: 0,
                    file_offset: 0,
                    filename,
                    build_id: 0,
                    has_functions: false,
                });
                self.mappings.insert(module.clone(), index);
                index
            }
        };
        let Some(mapping) = self.profile.mapping.get_mut(index) else {
            return 0;
        };
        // Addresses are file offsets: the mapping spans every offset sampled in the module.
        mapping.memory_limit = mapping.memory_limit.max(offset.saturating_add(1));
        // pprof re-symbolizes mappings without functions; ours were symbolized already.
        mapping.has_functions |= symbolized;
        mapping.id
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(&id) = self.locations.get(frame) {
            return id;
        }
        let mapping_id = self.mapping(&frame.module, frame.offset, frame.function.is_some());
        let line = match &frame.function {
            Some(name) => vec![proto::Line {
                function_id: self.function(name),
                line: 0,
            }],
            None => Vec::new(),
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id,
            address: frame.offset,
            line,
        });
        self.locations.insert(frame.clone(), id);
        id
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }
}

/// Bytes as pprof's signed values (a session never comes near i64::MAX bytes).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The profile message (not yet compressed).
pub fn profile(stacks: &StackProfile, duration_nanos: i64) -> proto::Profile {
    let mut builder = Builder::default();
    // String 0 must be "".
    builder.string("");
    let faulted = builder.value_type("faulted", "bytes");
    let reserved = builder.value_type("reserved", "bytes");
    let samples = builder.value_type("samples", "count");
    builder.profile.default_sample_type = faulted.r#type;
    builder.profile.period_type = Some(faulted.clone());
    builder.profile.period = signed(stacks.summary.fault_sample_bytes);
    builder.profile.sample_type = vec![faulted, reserved, samples];
    builder.profile.duration_nanos = duration_nanos;
    let comment = builder.string(
        "headroom: faulted = resident bytes made (byte-weighted samples), reserved = large mmap/brk",
    );
    builder.profile.comment.push(comment);
    // pprof shows the first mapping as the profiled file: the module of the frame that names
    // the heaviest stack (the service's binary, not the dynamic loader seen first).
    if let Some(frame) = stacks
        .stacks
        .iter()
        .max_by_key(|stack| (stack.fault_bytes, stack.reserved_bytes))
        .and_then(|stack| stacks.internal.naming_frame(&stack.frames))
    {
        builder.mapping(&frame.module, frame.offset, frame.function.is_some());
    }
    for stack in &stacks.stacks {
        if stack.fault_bytes == 0 && stack.reserved_bytes == 0 {
            continue;
        }
        let location_id = stack
            .frames
            .iter()
            .map(|frame| builder.location(frame))
            .collect();
        builder.profile.sample.push(proto::Sample {
            location_id,
            value: vec![
                signed(stack.fault_bytes),
                signed(stack.reserved_bytes),
                signed(stack.samples),
            ],
        });
    }
    builder.profile
}

/// The gzipped profile.proto bytes.
pub fn encode(stacks: &StackProfile, duration_nanos: i64) -> Result<Vec<u8>, PprofError> {
    let message = profile(stacks, duration_nanos);
    if message.sample.is_empty() {
        return Err(PprofError::NoStacks);
    }
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    let compress = |gzip: &mut GzEncoder<Vec<u8>>| gzip.write_all(&message.encode_to_vec());
    compress(&mut gzip).map_err(|source| PprofError::Write {
        path: "gzip stream".to_owned(),
        source,
    })?;
    gzip.finish().map_err(|source| PprofError::Write {
        path: "gzip stream".to_owned(),
        source,
    })
}

/// Writes the gzipped profile to `path`.
pub fn write(stacks: &StackProfile, duration_nanos: i64, path: &Path) -> Result<(), PprofError> {
    let bytes = encode(stacks, duration_nanos)?;
    std::fs::write(path, bytes).map_err(|source| PprofError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::stacks::SymbolizedStack;

    fn frame(function: Option<&str>, module: &str, offset: u64) -> Frame {
        Frame {
            function: function.map(Arc::from),
            module: Arc::from(module),
            offset,
        }
    }

    #[test]
    fn the_profile_decodes_with_shared_locations_and_every_value() {
        let stacks = vec![
            SymbolizedStack {
                frames: vec![
                    frame(Some("memset"), "libc.so.6", 0x50),
                    frame(Some("build_cache"), "service", 0x1100),
                    frame(Some("main"), "service", 0x1000),
                ],
                fault_bytes: 3 << 20,
                reserved_bytes: 4 << 20,
                samples: 6,
            },
            SymbolizedStack {
                frames: vec![
                    frame(None, "libfoo.so", 0x2f0),
                    frame(Some("main"), "service", 0x1000),
                ],
                fault_bytes: 1 << 20,
                reserved_bytes: 0,
                samples: 2,
            },
        ];
        let profile = StackProfile::for_tests(stacks);
        let bytes = encode(&profile, 5_000_000_000).expect("encodes");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .expect("gzip");
        let decoded = proto::Profile::decode(&raw[..]).expect("protobuf");
        let text = |index: i64| decoded.string_table[index as usize].clone();
        assert_eq!(decoded.string_table[0], "");
        let types: Vec<(String, String)> = decoded
            .sample_type
            .iter()
            .map(|t| (text(t.r#type), text(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("faulted".to_owned(), "bytes".to_owned()),
                ("reserved".to_owned(), "bytes".to_owned()),
                ("samples".to_owned(), "count".to_owned())
            ]
        );
        assert_eq!(text(decoded.default_sample_type), "faulted");
        assert_eq!(decoded.sample.len(), 2);
        assert_eq!(decoded.sample[0].value, [3 << 20, 4 << 20, 6]);
        // `main` at the same offset is one location, one function.
        assert_eq!(decoded.location.len(), 4);
        assert_eq!(decoded.function.len(), 3);
        assert_eq!(
            decoded.sample[0].location_id[2],
            decoded.sample[1].location_id[1]
        );
        // The stripped frame keeps its module and offset, with no function.
        let stripped = &decoded.location[decoded.sample[1].location_id[0] as usize - 1];
        assert!(stripped.line.is_empty());
        assert_eq!(stripped.address, 0x2f0);
        let mapping = &decoded.mapping[stripped.mapping_id as usize - 1];
        assert_eq!(text(mapping.filename), "libfoo.so");
        // The heaviest stack's naming module comes first: pprof's `File:`.
        assert_eq!(text(decoded.mapping[0].filename), "service");
        assert!(mapping.memory_limit > 0x2f0);
        assert_eq!(decoded.duration_nanos, 5_000_000_000);
    }

    #[test]
    fn no_stacks_is_an_error_not_an_empty_file() {
        let profile = StackProfile::for_tests(Vec::new());
        assert!(matches!(encode(&profile, 0), Err(PprofError::NoStacks)));
    }
}
