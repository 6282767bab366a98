//! Just enough of a BTF reader to find where the kernel keeps a struct member: the byte offset
//! of `task_struct.signal` and `signal_struct.live`, which the exit program reads with
//! `bpf_probe_read_kernel` on kernels whose sched_process_exit record has no `group_dead`.
//!
//! (aya-obj parses BTF too, but keeps struct members private.) The file is read once at load
//! and dropped; only an index of type positions is built, so parsing the kernel's 4-5 MB of
//! BTF costs about its own size in memory, for a moment.

use std::{fs, io, path::Path};

use thiserror::Error;

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF from {path}")]
    Unreadable {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct `{0}`")]
    StructMissing(String),
    #[error("the kernel's BTF has no member `{member}` in struct `{structure}`")]
    MemberMissing { structure: String, member: String },
    #[error(
        "`{structure}.{member}` is a bitfield in the kernel's BTF; a byte offset was expected"
    )]
    Bitfield { structure: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

mod kind {
    pub const INT: u32 = 1;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
    /// Highest kind this reader knows how to step over.
    pub const LAST: u32 = 19;
}

/// A parsed BTF blob: its bytes and where each type starts (type id `n` is `types[n - 1]`).
pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    strings: std::ops::Range<usize>,
    types: Vec<u32>,
}

/// One type's header: name, kind, kind flag, member count and size or referenced type.
#[derive(Clone, Copy)]
struct TypeHeader {
    name_offset: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
}

impl Btf {
    /// Reads the running kernel's BTF under `root` (`/` outside tests).
    pub fn from_kernel(root: &Path) -> Result<Self, BtfError> {
        let path = root.join(VMLINUX_BTF);
        let data = fs::read(&path).map_err(|source| BtfError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .ok_or(BtfError::Malformed("shorter than its header"))?;
        let big_endian = match [magic[0], magic[1]] {
            bytes if u16::from_le_bytes(bytes) == MAGIC => false,
            bytes if u16::from_be_bytes(bytes) == MAGIC => true,
            _ => return Err(BtfError::Malformed("bad magic")),
        };
        let mut btf = Self {
            data,
            big_endian,
            strings: 0..0,
            types: Vec::new(),
        };
        let header_len = btf.u32_at(4)? as usize;
        if header_len < HEADER_LEN {
            return Err(BtfError::Malformed("header too short"));
        }
        let type_off = btf.u32_at(8)? as usize;
        let type_len = btf.u32_at(12)? as usize;
        let str_off = btf.u32_at(16)? as usize;
        let str_len = btf.u32_at(20)? as usize;
        let types = header_len + type_off..header_len + type_off + type_len;
        btf.strings = header_len + str_off..header_len + str_off + str_len;
        if types.end > btf.data.len() || btf.strings.end > btf.data.len() {
            return Err(BtfError::Malformed("sections run past the end"));
        }
        let mut position = types.start;
        while position < types.end {
            let header = btf.header_at(position)?;
            btf.types.push(position as u32);
            position += TYPE_LEN + trailing_len(header)?;
        }
        if position != types.end {
            return Err(BtfError::Malformed("type section ends inside a type"));
        }
        Ok(btf)
    }

    /// The byte offset of `member` in `struct structure`, looking through anonymous struct
    /// and union members (as `randomized_struct_fields_start` makes in task_struct).
    pub fn member_offset(&self, structure: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::MemberMissing {
            structure: structure.to_owned(),
            member: member.to_owned(),
        };
        let id = self
            .struct_named(structure)?
            .ok_or_else(|| BtfError::StructMissing(structure.to_owned()))?;
        let bits = self.find_member(id, member, 0)?.ok_or_else(missing)?;
        if bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                structure: structure.to_owned(),
                member: member.to_owned(),
            });
        }
        u32::try_from(bits / 8).map_err(|_| missing())
    }

    fn struct_named(&self, name: &str) -> Result<Option<u32>, BtfError> {
        for (index, &position) in self.types.iter().enumerate() {
            let header = self.header_at(position as usize)?;
            if header.kind == kind::STRUCT && self.name(header.name_offset)? == name.as_bytes() {
                return Ok(Some(index as u32 + 1));
            }
        }
        Ok(None)
    }

    /// Bit offset of `member` in the struct or union `id`, `depth` anonymous levels down.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Result<Option<u64>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        let position = self.position(id)?;
        let header = self.header_at(position)?;
        if header.kind != kind::STRUCT && header.kind != kind::UNION {
            return Ok(None);
        }
        for index in 0..header.vlen {
            let at = position + TYPE_LEN + index * 12;
            let name_offset = self.u32_at(at)?;
            let member_type = self.u32_at(at + 4)?;
            let raw_offset = self.u32_at(at + 8)?;
            // With the kind flag, the top 8 bits are a bitfield size.
            let bits = u64::from(if header.kind_flag {
                raw_offset & 0x00ff_ffff
            } else {
                raw_offset
            });
            if name_offset == 0 {
                let inner = self.skip_modifiers(member_type)?;
                if let Some(found) = self.find_member(inner, member, depth + 1)? {
                    return Ok(Some(bits + found));
                }
            } else if self.name(name_offset)? == member.as_bytes() {
                return Ok(Some(bits));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..16 {
            if id == 0 {
                return Ok(0);
            }
            let header = self.header_at(self.position(id)?)?;
            match header.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = header.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed(
            "a chain of typedefs and qualifiers does not end",
        ))
    }

    fn position(&self, id: u32) -> Result<usize, BtfError> {
        id.checked_sub(1)
            .and_then(|index| self.types.get(index as usize))
            .map(|&position| position as usize)
            .ok_or(BtfError::Malformed(
                "a type refers to a type id that does not exist",
            ))
    }

    fn header_at(&self, position: usize) -> Result<TypeHeader, BtfError> {
        let info = self.u32_at(position + 4)?;
        Ok(TypeHeader {
            name_offset: self.u32_at(position)?,
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 != 0,
            vlen: (info & 0xffff) as usize,
            size_or_type: self.u32_at(position + 8)?,
        })
    }

    fn name(&self, offset: u32) -> Result<&[u8], BtfError> {
        let start = self.strings.start + offset as usize;
        let strings = self
            .data
            .get(start..self.strings.end)
            .ok_or(BtfError::Malformed(
                "a name lies outside the string section",
            ))?;
        let end = strings
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(strings.len());
        Ok(&strings[..end])
    }

    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        let bytes: [u8; 4] = self
            .data
            .get(at..at + 4)
            .and_then(|slice| slice.try_into().ok())
            .ok_or(BtfError::Malformed("a record runs past the end"))?;
        Ok(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    /// Number of types (for tests and logs).
    pub fn type_count(&self) -> usize {
        self.types.len()
    }
}

/// Bytes that follow a type's 12-byte header, by kind.
fn trailing_len(header: TypeHeader) -> Result<usize, BtfError> {
    Ok(match header.kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => header.vlen * 12,
        kind::ENUM | kind::FUNC_PROTO => header.vlen * 8,
        newer if newer > kind::LAST => {
            return Err(BtfError::Malformed(
                "a type of a kind newer than this reader",
            ))
        }
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestType<'a> = (&'a str, u32, u32, Vec<u32>);

    /// A little-endian BTF blob of (name, info, size_or_type, trailing words), with `names`
    /// first in the string section (see `name_offset`), then the types' own names.
    fn blob(types: &[TestType], names: &[&str]) -> Vec<u8> {
        let mut strings = vec![0u8];
        for name in names {
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
        }
        let mut type_bytes = Vec::new();
        for (name, info, size, trailing) in types {
            let name_offset = if name.is_empty() {
                0
            } else {
                let at = strings.len() as u32;
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                at
            };
            for word in [name_offset, *info, *size].iter().chain(trailing) {
                type_bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        let type_len = type_bytes.len() as u32;
        for word in [
            HEADER_LEN as u32,
            0,
            type_len,
            type_len,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(&strings);
        out
    }

    /// Offset of `names[index]` in a string section laid out by `blob`.
    fn name_offset(names: &[&str], index: usize) -> u32 {
        1 + names[..index]
            .iter()
            .map(|n| n.len() as u32 + 1)
            .sum::<u32>()
    }

    fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    #[test]
    fn finds_members_directly_and_through_anonymous_structs() {
        let names = ["pid", "signal", "live", "counter"];
        let [pid, signal, live, counter] = [0, 1, 2, 3].map(|index| name_offset(&names, index));
        let types = [
            // 1: int
            ("int", info(kind::INT, 0), 4, vec![32]),
            // 2: struct { int counter; }
            ("", info(kind::STRUCT, 1), 4, vec![counter, 1, 0]),
            // 3: typedef atomic_t
            ("atomic_t", info(kind::TYPEDEF, 0), 2, vec![]),
            // 4: struct signal_struct { int pid @0; atomic_t live @32 bits }
            (
                "signal_struct",
                info(kind::STRUCT, 2),
                8,
                vec![pid, 1, 0, live, 3, 32],
            ),
            // 5: pointer to 4
            ("", info(2, 0), 4, vec![]),
            // 6: anonymous struct { struct signal_struct *signal @64 bits }
            ("", info(kind::STRUCT, 1), 16, vec![signal, 5, 64]),
            // 7: struct task_struct { int pid @0; anonymous @1024 bits }
            (
                "task_struct",
                info(kind::STRUCT, 2),
                256,
                vec![pid, 1, 0, 0, 6, 1024],
            ),
        ];
        let btf = Btf::parse(blob(&types, &names)).expect("parse");
        assert_eq!(btf.type_count(), 7);
        assert_eq!(
            btf.member_offset("task_struct", "signal").expect("signal"),
            136
        );
        assert_eq!(btf.member_offset("signal_struct", "live").expect("live"), 4);
        assert!(matches!(
            btf.member_offset("task_struct", "nope"),
            Err(BtfError::MemberMissing { .. })
        ));
        assert!(matches!(
            btf.member_offset("mm_struct", "mmap"),
            Err(BtfError::StructMissing(_))
        ));
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        assert!(matches!(Btf::parse(vec![]), Err(BtfError::Malformed(_))));
        assert!(matches!(
            Btf::parse(vec![0; 64]),
            Err(BtfError::Malformed("bad magic"))
        ));
        let mut truncated = blob(&[("int", info(kind::INT, 0), 4, vec![32])], &[]);
        truncated.truncate(30);
        assert!(Btf::parse(truncated).is_err());
        let unknown_kind = blob(&[("x", info(31, 0), 0, vec![])], &[]);
        assert!(Btf::parse(unknown_kind).is_err());
    }

    #[test]
    fn the_running_kernels_btf_has_the_exit_members() {
        // Where the host has BTF (every kernel headroom's CI runs on), the real thing parses.
        let Ok(btf) = Btf::from_kernel(Path::new("/")) else {
            return;
        };
        let signal = btf
            .member_offset("task_struct", "signal")
            .expect("task_struct.signal");
        let live = btf
            .member_offset("signal_struct", "live")
            .expect("signal_struct.live");
        assert!(signal > 0 && signal % 8 == 0, "{signal}");
        assert!(live > 0 && live % 4 == 0, "{live}");
    }
}
