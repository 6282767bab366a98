//! A private, sealed copy of the parts of an ELF file that symbolization reads.
//!
//! blazesym maps the file it symbolizes. A container's library is a file the container can
//! truncate at any moment, and a mapped page past the new end raises SIGBUS in the reader,
//! which would kill the agent. So headroom never hands blazesym the container's file: it
//! copies the ELF header, the program and section header tables, the section name table,
//! the notes (build id) and the symbol and string tables (`.symtab`, `.strtab`, `.dynsym`,
//! `.dynstr`) with bounded reads (`pread`, which a truncation only shortens) into a sparse
//! memfd of the same size, at the same offsets, and seals it against any change. The rest of
//! the copy is holes that take no memory; blazesym reads it as the file, at the copy's path.

use std::{
    ffi::CStr,
    fs::File,
    os::{fd::FromRawFd as _, unix::fs::FileExt as _},
};

use object::{
    elf::{FileHeader64, PT_NOTE, SHT_NOBITS},
    read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _},
    Endianness, ReadCache,
};

/// Most bytes copied from one file (symbol and string tables above it are left out: the
/// module's frames then stay module + offset). A stripped library copies a few hundred KiB;
/// an unstripped Rust release service a few MiB.
pub const MAX_COPIED_BYTES: u64 = 32 << 20;

/// Sections symbolization reads, besides the header tables.
const SECTIONS_COPIED: [&[u8]; 6] = [
    b".shstrtab",
    b".symtab",
    b".strtab",
    b".dynsym",
    b".dynstr",
    b".note.gnu.build-id",
];

/// The copy of `file` (a 64-bit ELF of `size` bytes), or None when it is not one, when it
/// changed while being read, or when what symbolization needs exceeds [`MAX_COPIED_BYTES`].
pub fn copy_for_symbols(file: &File, size: u64) -> Option<File> {
    let ranges = ranges_to_copy(file)?;
    let total: u64 = ranges.iter().map(|(_, len)| len).sum();
    if total > MAX_COPIED_BYTES {
        tracing::debug!(
            bytes = total,
            "symbol tables above the copy budget: not symbolized"
        );
        return None;
    }
    let copy = sealable_memfd()?;
    copy.set_len(size).ok()?;
    let mut buffer = Vec::new();
    for (offset, len) in ranges {
        buffer.resize(usize::try_from(len).ok()?, 0);
        // A truncated file ends the read early: no copy, never a signal.
        file.read_exact_at(&mut buffer, offset).ok()?;
        copy.write_all_at(&buffer, offset).ok()?;
    }
    // SAFETY: fcntl(2) on a descriptor we own; the result is checked.
    let sealed = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&copy),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL,
        )
    };
    (sealed == 0).then_some(copy)
}

/// (offset, length) of every part of the file symbolization reads, each within the file.
fn ranges_to_copy(file: &File) -> Option<Vec<(u64, u64)>> {
    let data = ReadCache::new(file);
    let header = FileHeader64::<Endianness>::parse(&data).ok()?;
    let endian = header.endian().ok()?;
    let mut ranges = vec![(0, size_of::<FileHeader64<Endianness>>() as u64)];
    let program_headers = header.program_headers(endian, &data).ok()?;
    ranges.push((header.e_phoff(endian), size_of_val(program_headers) as u64));
    for segment in program_headers {
        if segment.p_type(endian) == PT_NOTE {
            ranges.push((segment.p_offset(endian), segment.p_filesz(endian)));
        }
    }
    let section_headers = header.section_headers(endian, &data).ok()?;
    ranges.push((header.e_shoff(endian), size_of_val(section_headers) as u64));
    if !section_headers.is_empty() {
        let sections = header.sections(endian, &data).ok()?;
        for section in sections.iter() {
            let copied = sections
                .section_name(endian, section)
                .is_ok_and(|name| SECTIONS_COPIED.contains(&name));
            if copied && section.sh_type(endian) != SHT_NOBITS {
                ranges.push((section.sh_offset(endian), section.sh_size(endian)));
            }
        }
    }
    ranges.retain(|(_, len)| *len > 0);
    Some(ranges)
}

fn sealable_memfd() -> Option<File> {
    const NAME: &CStr = c"headroom-symbols";
    // SAFETY: memfd_create(2) with a NUL-terminated name; the result is checked.
    let fd =
        unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor that nothing else owns.
    Some(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_and_holds_only_the_tables() {
        let path = std::env::current_exe().expect("own binary");
        let file = File::open(&path).expect("open");
        let size = file.metadata().expect("metadata").len();
        let copy = copy_for_symbols(&file, size).expect("a 64-bit ELF");
        assert_eq!(copy.metadata().expect("metadata").len(), size);
        // Sealed: neither shrunk nor written.
        assert!(copy.set_len(0).is_err());
        assert!(copy.write_all_at(b"x", 0).is_err());
        // The header is copied, and the copy is still an ELF with the same symbols.
        let mut magic = [0u8; 4];
        copy.read_exact_at(&mut magic, 0).expect("read");
        assert_eq!(&magic, b"\x7fELF");
        let ranges = ranges_to_copy(&file).expect("ranges");
        let copied: u64 = ranges.iter().map(|(_, len)| len).sum();
        assert!(copied < size / 2, "copied {copied} of {size}");
    }

    #[test]
    fn not_an_elf_is_not_copied() {
        let path = std::env::temp_dir().join(format!("headroom-not-elf-{}", std::process::id()));
        std::fs::write(&path, b"#!/bin/sh\necho hello\n").expect("fixture");
        let file = File::open(&path).expect("open");
        assert!(copy_for_symbols(&file, 22).is_none());
        let _ = std::fs::remove_file(&path);
    }
}
