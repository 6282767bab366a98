//! The executable files mapped by sampled processes, opened safely, cached by build id, and
//! symbolized with blazesym.
//!
//! Safety of reading container files: a path in /proc/PID/maps is text the container controls
//! (its own mount namespace decides what it names). It is only ever opened below
//! `/proc/PID/root`, which the kernel resolves inside the process's own root, so no container
//! can make headroom read a host file. Files larger than [`MAX_MODULE_BYTES`] are not read.
//!
//! A hostile file cannot block or bloat the reader: a path is opened `O_PATH` and read only
//! when it is a regular file (never a FIFO or a device); unwind sections are read one by one,
//! each within [`MAX_UNWIND_SECTION_BYTES`], never the whole file; symbols come from the
//! ELF symbol tables only, so blazesym follows no `.gnu_debuglink`, `.gnu_debugaltlink` or
//! `.dwp` name the file gives (those would be host paths), and names no DWARF inlined frames.
//! blazesym maps the file it reads, and a container can truncate its library while it is
//! symbolized (a mapped page past the new end raises SIGBUS): blazesym only ever reads a
//! sealed private copy of the symbol tables ([`symbol_copy`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::symbolize::{source::Elf, source::Source, Input, Symbolized, Symbolizer};
use object::{Object, ObjectSection, ObjectSegment};

use super::symbol_copy;
use crate::procfs::{self, MapsLine};

/// Largest file headroom reads to symbolize or unwind (a size limit on container input).
pub const MAX_MODULE_BYTES: u64 = 1 << 30;

/// Largest `.text`, `.eh_frame` or `.eh_frame_hdr` read for unwinding (without `.text`,
/// framehop still unwinds from the CFI; without `.eh_frame`, the module falls back to frame
/// pointers).
const MAX_UNWIND_SECTION_BYTES: u64 = 64 << 20;

/// Distinct executable files kept open at once; beyond this, frames stay module + offset.
pub const MAX_MODULES: usize = 256;

/// Symbol lookups remembered per module.
const MAX_SYMBOLS_PER_MODULE: usize = 65_536;

/// One executable mapping of a process, from /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// Index into [`ModuleCache`]; `None` for anonymous code (JIT), the vdso and unreadable files.
    pub module: Option<usize>,
    /// Short name for display: the file's base name, `[vdso]`, `[anon]`.
    pub name: Arc<str>,
}

/// What headroom learned about one executable file.
pub struct Module {
    pub name: Arc<str>,
    /// Kept open so the file can be read after its process exits.
    file: File,
    /// The sealed copy of its symbol tables that blazesym reads (None: not a 64-bit ELF, or
    /// above the copy budget; its frames stay module + offset).
    symbols_copy: Option<File>,
    pub build_id: Option<String>,
    /// (p_offset, p_vaddr, p_filesz) of each executable PT_LOAD segment, to place the file
    /// in memory.
    exec_segments: Vec<(u64, u64, u64)>,
    symbols: HashMap<u64, Option<Arc<str>>>,
    /// Shared with other copies of the same build (another container's identical binary).
    unwind_sections: Option<Arc<UnwindSections>>,
    unwind_sections_read: bool,
}

/// The sections `.eh_frame` unwinding reads, with their link-time addresses.
pub struct UnwindSections {
    pub base_svma: u64,
    pub text_svma: Option<std::ops::Range<u64>>,
    pub text: Option<Arc<[u8]>>,
    pub eh_frame_svma: Option<std::ops::Range<u64>>,
    pub eh_frame: Option<Arc<[u8]>>,
    pub eh_frame_hdr_svma: Option<std::ops::Range<u64>>,
    pub eh_frame_hdr: Option<Arc<[u8]>>,
}

impl Module {
    /// Where the file's link-time address 0 sits in a process that maps file offset
    /// `file_offset` at `start`.
    pub fn load_bias(&self, start: u64, file_offset: u64) -> u64 {
        load_bias(&self.exec_segments, start, file_offset)
    }

    /// The path blazesym reads: the sealed copy, never the container's file.
    fn symbols_path(&self) -> Option<PathBuf> {
        self.symbols_copy
            .as_ref()
            .map(|copy| PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd())))
    }
}

/// Where link-time address 0 sits, given the executable segments and one mapping of them.
/// The kernel maps a segment from its offset rounded down to the page, so the mapping's
/// `file_offset` can lie below `p_offset` (lld lays segments out with `p_vaddr - p_offset`
/// a page apart, and the text segment starts mid-page); only executable segments are
/// considered, since the read-only segment before the text covers the same page.
fn load_bias(exec_segments: &[(u64, u64, u64)], start: u64, file_offset: u64) -> u64 {
    const PAGE: u64 = 4096;
    let segment = exec_segments.iter().find(|(offset, _, size)| {
        file_offset >= offset & !(PAGE - 1) && file_offset < offset.saturating_add(*size)
    });
    match segment {
        Some((p_offset, p_vaddr, _)) => start
            .wrapping_sub(file_offset)
            .wrapping_add(*p_offset)
            .wrapping_sub(*p_vaddr),
        None => start.wrapping_sub(file_offset),
    }
}

/// Open executable files, keyed by device and inode, sharing symbol caches by build id.
#[derive(Default)]
pub struct ModuleCache {
    modules: Vec<Module>,
    by_file: HashMap<(String, u64), usize>,
    symbolizer: Option<Symbolizer>,
    /// Files that could not be opened or were too large (counted, never fatal).
    pub unreadable: u64,
}

impl ModuleCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    pub fn module(&self, index: usize) -> Option<&Module> {
        self.modules.get(index)
    }

    /// The executable mappings of a live process, opening files not seen before.
    pub fn snapshot_process(&mut self, proc_root: &Path, pid: u32) -> Vec<ExecMapping> {
        let Some(maps) = procfs::read_maps(proc_root, pid) else {
            return Vec::new();
        };
        maps.lines()
            .filter_map(|line| procfs::parse_maps_line(line).ok())
            .filter(MapsLine::executable)
            .map(|line| {
                let (module, name) = self.module_for(proc_root, pid, &line);
                ExecMapping {
                    start: line.start,
                    end: line.end,
                    file_offset: line.offset,
                    module,
                    name,
                }
            })
            .collect()
    }

    fn module_for(
        &mut self,
        proc_root: &Path,
        pid: u32,
        line: &MapsLine<'_>,
    ) -> (Option<usize>, Arc<str>) {
        if !line.path.starts_with('/') || line.inode == 0 {
            let name = if line.path.is_empty() {
                "[anon]"
            } else {
                line.path
            };
            return (None, Arc::from(name));
        }
        let display = line
            .path
            .trim_end_matches(" (deleted)")
            .rsplit('/')
            .next()
            .unwrap_or(line.path);
        let name: Arc<str> = Arc::from(display);
        let key = (line.device.to_owned(), line.inode);
        if let Some(&index) = self.by_file.get(&key) {
            return (Some(index), name);
        }
        if self.modules.len() >= MAX_MODULES {
            return (None, name);
        }
        // Through the process's own root, never a host path taken from the maps text.
        let root = proc_root.join(format!("proc/{pid}/root"));
        match open_in_root(&root, line.path).and_then(|file| open_module(file, name.clone())) {
            Some(mut module) => {
                // Same build in another file (another container's copy): share its sections.
                if let Some(existing) = module.build_id.as_ref().and_then(|id| {
                    self.modules
                        .iter()
                        .find(|other| other.build_id.as_deref() == Some(id))
                }) {
                    module.unwind_sections = existing.unwind_sections.clone();
                    module.unwind_sections_read = existing.unwind_sections_read;
                }
                self.modules.push(module);
                let index = self.modules.len() - 1;
                self.by_file.insert(key, index);
                (Some(index), name)
            }
            None => {
                self.unreadable += 1;
                (None, name)
            }
        }
    }

    /// Function names for file offsets in one module (`None` where the file has no symbol).
    pub fn symbolize(&mut self, index: usize, offsets: &[u64]) -> Vec<Option<Arc<str>>> {
        let Some(module) = self.modules.get_mut(index) else {
            return vec![None; offsets.len()];
        };
        let missing: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|offset| !module.symbols.contains_key(offset))
            .collect();
        if let (false, Some(path)) = (missing.is_empty(), module.symbols_path()) {
            let symbolizer = self.symbolizer.get_or_insert_with(hardened_symbolizer);
            let mut elf = Elf::new(path);
            // ELF symbols only: no DWARF, so no .gnu_debuglink, .gnu_debugaltlink or .dwp
            // lookups. A container's binary names those files; blazesym would open them as
            // host paths (an absolute link, /usr/lib/debug, the directory /proc/self/fd
            // resolves to), and a FIFO there blocks the agent's thread forever.
            elf.debug_syms = false;
            let source = Source::Elf(elf);
            let names: Vec<Option<Arc<str>>> = match symbolizer
                .symbolize(&source, Input::FileOffset(&missing))
            {
                Ok(results) => results
                    .into_iter()
                    .map(|result| match result {
                        Symbolized::Sym(sym) => Some(Arc::from(sym.name.as_ref())),
                        Symbolized::Unknown(_) => None,
                    })
                    .collect(),
                Err(err) => {
                    tracing::debug!(module = %module.name, error = %err, "symbolization failed");
                    vec![None; missing.len()]
                }
            };
            if module.symbols.len() + missing.len() > MAX_SYMBOLS_PER_MODULE {
                module.symbols.clear();
            }
            for (offset, name) in missing.into_iter().zip(names) {
                module.symbols.insert(offset, name);
            }
        }
        offsets
            .iter()
            .map(|offset| module.symbols.get(offset).cloned().flatten())
            .collect()
    }

    /// The unwind sections of a module, read on first use.
    pub fn unwind_sections(&mut self, index: usize) -> Option<Arc<UnwindSections>> {
        let module = self.modules.get_mut(index)?;
        if !module.unwind_sections_read {
            module.unwind_sections_read = true;
            module.unwind_sections = read_unwind_sections(&module.file).map(Arc::new);
        }
        module.unwind_sections.clone()
    }
}

/// A symbolizer that demangles (Rust legacy and v0, C++) and searches no debug directories.
fn hardened_symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_demangling(true)
        .set_debug_dirs(Some::<[&Path; 0]>([]))
        .build()
}

/// Opens `path` with `root` as its root directory: `..` and symlinks, absolute ones included,
/// resolve inside that root (openat2 RESOLVE_IN_ROOT, Linux 5.6+), so a container that swaps a
/// directory for a symlink to `/etc` still only reaches its own files.
fn open_in_root(root: &Path, path: &str) -> Option<File> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let root_path = CString::new(root.as_os_str().as_bytes()).ok()?;
    let relative = CString::new(path.trim_start_matches('/')).ok()?;
    // SAFETY: open(2) with a valid NUL-terminated path; the result is checked.
    let root_fd = unsafe {
        libc::open(
            root_path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root_fd < 0 {
        return None;
    }
    // SAFETY: `root_fd` is a descriptor we own from here on.
    let root_dir = unsafe { std::os::fd::OwnedFd::from_raw_fd(root_fd) };
    // SAFETY: open_how is a plain C struct of integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_PATH first: nothing is opened for reading until the file is known to be a regular
    // file (opening a FIFO for reading blocks; opening a device can act on it).
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2(2) with a valid directory fd, a NUL-terminated path and a properly sized
    // `open_how`; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            relative.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let path_fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let path_file = File::from(path_fd);
    if !path_file.metadata().ok()?.is_file() {
        return None;
    }
    // Reopening the O_PATH descriptor through /proc/self/fd opens the same inode, whatever
    // the container renames meanwhile.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", path_file.as_raw_fd()))
        .ok()
}

fn open_module(file: File, name: Arc<str>) -> Option<Module> {
    let size = file.metadata().ok()?.len();
    if size > MAX_MODULE_BYTES {
        return None;
    }
    let symbols_copy = symbol_copy::copy_for_symbols(&file, size);
    let build_id = symbols_copy
        .as_ref()
        .map(|copy| PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd())))
        .and_then(|path| blazesym::helper::read_elf_build_id(&path).ok().flatten())
        .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect());
    let exec_segments = read_exec_segments(&file).unwrap_or_default();
    Some(Module {
        name,
        file,
        symbols_copy,
        build_id,
        exec_segments,
        symbols: HashMap::new(),
        unwind_sections: None,
        unwind_sections_read: false,
    })
}

/// (p_offset, p_vaddr, p_filesz) of the executable loadable segments.
fn read_exec_segments(file: &File) -> Option<Vec<(u64, u64, u64)>> {
    // Read through a cache of the ranges parsed (headers, program and section headers), not
    // the whole file: section headers sit at the end.
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    Some(
        elf.segments()
            .filter(|segment| {
                matches!(segment.flags(), object::SegmentFlags::Elf { p_flags }
                    if p_flags & object::elf::PF_X != 0)
            })
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset, segment.address(), size)
            })
            .collect(),
    )
}

fn read_unwind_sections(file: &File) -> Option<UnwindSections> {
    // Only the three sections are read (ReadCache reads the ranges parsed, at explicit
    // offsets), never the whole file; a section above the budget is left out.
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let section = |name: &str| {
        let section = elf.section_by_name(name)?;
        if section.size() > MAX_UNWIND_SECTION_BYTES {
            return None;
        }
        let bytes: Arc<[u8]> = Arc::from(section.data().ok()?);
        let range = section.address()..section.address() + section.size();
        Some((range, bytes))
    };
    let (text_svma, text) = section(".text").unzip();
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    Some(UnwindSections {
        base_svma: 0,
        text_svma,
        text,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File offsets of two functions of a library, from its dynamic symbols.
    fn function_offsets(path: &Path, names: [&str; 2]) -> [u64; 2] {
        use object::{Object as _, ObjectSymbol as _};
        let data = std::fs::read(path).expect("read the library");
        let elf = object::File::parse(&*data).expect("an ELF");
        names.map(|wanted| {
            let symbol = elf
                .dynamic_symbols()
                .find(|symbol| symbol.name() == Ok(wanted))
                .unwrap_or_else(|| panic!("{wanted} in {}", path.display()));
            let segment = elf
                .segments()
                .find(|segment| {
                    (segment.address()..segment.address() + segment.size())
                        .contains(&symbol.address())
                })
                .expect("a segment");
            symbol.address() - segment.address() + segment.file_range().0
        })
    }

    /// A container can truncate a library while headroom symbolizes it. blazesym maps what
    /// it reads: reading the container's file, a truncation during a lookup raises SIGBUS
    /// (which kills the agent), and after one the file is gone for good (measured: the second
    /// lookup named nothing). blazesym reads a sealed copy taken when the module was opened.
    #[test]
    fn a_library_truncated_between_two_symbolizations_is_still_named() {
        let libc_path = std::fs::read_to_string("/proc/self/maps")
            .expect("maps")
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .find(|path| path.contains("/libc.so"))
            .map(PathBuf::from)
            .expect("this test links glibc");
        let root = std::env::temp_dir().join(format!("headroom-truncate-{}", std::process::id()));
        let bin = root.join("proc/42/root/lib");
        std::fs::create_dir_all(&bin).expect("fixture");
        let copy = bin.join("libc.so.6");
        std::fs::copy(&libc_path, &copy).expect("copy libc");
        std::fs::write(
            root.join("proc/42/maps"),
            "7f0000000000-7f0000100000 r-xp 00000000 fe:01 97 /lib/libc.so.6\n",
        )
        .expect("fixture");
        let [malloc, free] = function_offsets(&copy, ["malloc", "free"]);
        let mut cache = ModuleCache::new();
        let mappings = cache.snapshot_process(&root, 42);
        assert_eq!(mappings[0].module, Some(0));
        let first = cache.symbolize(0, &[malloc]);
        assert!(
            first[0]
                .as_deref()
                .is_some_and(|name| name.contains("malloc")),
            "{first:?}"
        );
        // The container truncates the file to one page.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .and_then(|file| file.set_len(4096))
            .expect("truncate");
        let second = cache.symbolize(0, &[free]);
        assert!(
            second[0]
                .as_deref()
                .is_some_and(|name| name.contains("free")),
            "{second:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn load_bias_places_lld_and_gnu_ld_text_segments() {
        // `cargo build --release` (lld): R-X at p_offset 0x13720, p_vaddr 0x14720, mapped
        // from the page at file offset 0x13000.
        let lld = [(0x13720, 0x14720, 0x3eb80)];
        let start = 0x5555_5556_8000;
        let bias = load_bias(&lld, start, 0x13000);
        assert_eq!(bias, start - 0x14000);
        // The instruction at link-time address 0x14800 is at file offset 0x13800.
        assert_eq!(bias + 0x14800 - start + 0x13000, 0x13800);
        // GNU ld: offset and address equal, page aligned.
        let gnu = [(0x26000, 0x26000, 0x156000)];
        assert_eq!(load_bias(&gnu, 0x7f00_0002_6000, 0x26000), 0x7f00_0000_0000);
        // Unknown layout: the mapping's own start and offset.
        assert_eq!(load_bias(&[], 0x40_1000, 0x1000), 0x40_0000);
    }

    #[test]
    fn a_host_path_in_maps_is_opened_below_the_process_root_only() {
        let root = std::env::temp_dir().join(format!("headroom-modules-{}", std::process::id()));
        let proc_dir = root.join("proc/42/root/bin");
        std::fs::create_dir_all(&proc_dir).expect("fixture");
        std::fs::write(
            root.join("proc/42/maps"),
            "400000-401000 r-xp 00000000 fe:01 99 /bin/tool\n",
        )
        .expect("fixture");
        let mut cache = ModuleCache::new();
        // /bin/tool does not exist under the fake root: unreadable, not the host's /bin/tool.
        let mappings = cache.snapshot_process(&root, 42);
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].module, None);
        assert_eq!(cache.unreadable, 1);
        // Once the container's file exists, it is the one opened.
        std::fs::write(proc_dir.join("tool"), b"not an elf").expect("fixture");
        let mut cache = ModuleCache::new();
        let mappings = cache.snapshot_process(&root, 42);
        assert_eq!(mappings[0].module, Some(0));
        assert_eq!(&*mappings[0].name, "tool");
        // A symlink to a host path resolves inside the process's root, not on the host.
        std::os::unix::fs::symlink("/etc/hostname", proc_dir.join("link")).expect("fixture");
        std::fs::write(
            root.join("proc/42/maps"),
            "400000-401000 r-xp 00000000 fe:01 98 /bin/link\n",
        )
        .expect("fixture");
        let mut escaped = ModuleCache::new();
        assert_eq!(escaped.snapshot_process(&root, 42)[0].module, None);
        // A FIFO (a container can swap one in for a mapped file) is not opened for reading:
        // that would block until a writer came.
        let fifo = std::ffi::CString::new(proc_dir.join("pipe").as_os_str().as_encoded_bytes())
            .expect("path");
        // SAFETY: mkfifo(3) with a valid NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        std::fs::write(
            root.join("proc/42/maps"),
            "400000-401000 r-xp 00000000 fe:01 97 /bin/pipe\n",
        )
        .expect("fixture");
        let mut piped = ModuleCache::new();
        assert_eq!(piped.snapshot_process(&root, 42)[0].module, None);
        assert_eq!(piped.unreadable, 1);
        // A file that is not ELF symbolizes to nothing, never an error.
        assert_eq!(cache.symbolize(0, &[0x10]), vec![None]);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
