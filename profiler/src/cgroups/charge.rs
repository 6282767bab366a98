//! A cgroup's memory charge, peak, limit and OOM kills, read from the v2 files or the v1
//! memory controller's, and the parsers of those files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::CgroupError;

/// Reads a cgroup's memory charge: cgroup v2 files when the unified cgroup has the memory
/// controller, otherwise the v1 memory cgroup's. Files are kept open and re-read from offset 0,
/// so a 10 ms sampling loop costs one pread per sample.
#[derive(Debug)]
pub struct ChargeReader {
    version: ChargeVersion,
    dir: PathBuf,
    current: fs::File,
    /// v2 memory.peak opened once; on kernels that support it, writing to it resets the peak
    /// seen through this descriptor only (never other readers'). None where that does not work.
    window_peak: Option<fs::File>,
    /// The lifetime high-water mark (v2 memory.peak, v1 memory.max_usage_in_bytes), kept open
    /// for where per-descriptor resets do not work, and its value at the last reading.
    lifetime_peak: Option<fs::File>,
    last_lifetime_peak: u64,
    /// The lifetime high-water mark when the reader was opened, read before anything could
    /// reset a window: what the cgroup reached before it was watched.
    peak_at_open: Option<u64>,
}

/// The highest charge of an interval, and how it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntervalPeak {
    /// The kernel's peak over exactly this interval (v2, reset per descriptor, Linux 6.12+).
    Window(u64),
    /// The cgroup's lifetime high-water mark rose during the interval to this value: exact for
    /// a new record, blind to a lower spike between two readings (v1, v2 before 6.12).
    NewRecord(u64),
}

impl IntervalPeak {
    pub fn bytes(self) -> u64 {
        match self {
            Self::Window(bytes) | Self::NewRecord(bytes) => bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeVersion {
    V1,
    V2,
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

fn read_number(file: &fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = [0u8; 32];
    let length = file.read_at(&mut buffer, 0).ok()?;
    parse_number(buffer.get(..length)?)
}

/// A single-number cgroup file (memory.current, memory.peak, memory.usage_in_bytes, ...).
/// Public for the fuzz targets.
pub fn parse_number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    parse_key(&fs::read_to_string(path).ok()?, key)
}

/// The value of `key` in a flat-keyed cgroup file (`name value` lines: memory.stat,
/// memory.events, memory.oom_control). Public for the fuzz targets.
pub fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Clean, unmapped page cache in a memory.stat text: file pages less shmem (counted as file
/// but swap-backed, never dropped), dirty and writeback pages (they must reach the disk
/// first), and mapped file pages (a program's code and mapped data: dropping them thrashes).
/// Not `inactive_file`, the kubelet's figure: on cgroup v2 a file just written often sits on
/// the active list (MGLRU, or a second touch), which the kernel still reclaims before an OOM
/// kill, so a writer's whole file would count as needed.
pub fn reclaimable_cache_in(stat: &str, version: ChargeVersion) -> Option<u64> {
    let [file, shmem, dirty, writeback, mapped] = match version {
        ChargeVersion::V2 => [
            "file",
            "shmem",
            "file_dirty",
            "file_writeback",
            "file_mapped",
        ],
        ChargeVersion::V1 => [
            "total_cache",
            "total_shmem",
            "total_dirty",
            "total_writeback",
            "total_mapped_file",
        ],
    };
    let held = [shmem, dirty, writeback, mapped]
        .iter()
        .map(|key| parse_key(stat, key).unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    Some(parse_key(stat, file)?.saturating_sub(held))
}

/// The `total=` of one line (`some` or `full`) of a PSI file such as memory.pressure:
/// `full avg10=0.00 avg60=0.00 avg300=0.00 total=12345`. Public for the fuzz targets.
pub fn parse_pressure_total(text: &str, kind: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(kind)?.strip_prefix(' ')?;
        rest.split_whitespace()
            .find_map(|field| field.strip_prefix("total="))?
            .parse()
            .ok()
    })
}

/// Opens v2 memory.peak for per-descriptor windows and starts the first window now, so the
/// first interval does not report the cgroup's lifetime peak. None where the kernel does not
/// reset per descriptor (before 6.12 the file is read-only).
fn open_window_peak(path: &Path) -> Option<fs::File> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    reset_peak(&mut file).then_some(file)
}

/// Resets the peak seen through this descriptor; false where the kernel refuses.
fn reset_peak(file: &mut fs::File) -> bool {
    use std::io::Write as _;
    file.write_all(b"reset\n").is_ok()
}

impl ChargeReader {
    /// A reader for the cgroup at `unified_dir` (and its v1 memory twin, if any).
    pub fn open(unified_dir: &Path, memory_v1_dir: Option<&Path>) -> Option<Self> {
        if let Ok(current) = fs::File::open(unified_dir.join("memory.current")) {
            let lifetime_peak = fs::File::open(unified_dir.join("memory.peak")).ok();
            let peak_at_open = lifetime_peak.as_ref().and_then(read_number);
            return Some(Self {
                version: ChargeVersion::V2,
                dir: unified_dir.to_path_buf(),
                current,
                window_peak: open_window_peak(&unified_dir.join("memory.peak")),
                last_lifetime_peak: peak_at_open.unwrap_or(0),
                lifetime_peak,
                peak_at_open,
            });
        }
        let dir = memory_v1_dir?;
        let current = fs::File::open(dir.join("memory.usage_in_bytes")).ok()?;
        let lifetime_peak = fs::File::open(dir.join("memory.max_usage_in_bytes")).ok();
        let peak_at_open = lifetime_peak.as_ref().and_then(read_number);
        Some(Self {
            version: ChargeVersion::V1,
            dir: dir.to_path_buf(),
            current,
            window_peak: None,
            last_lifetime_peak: peak_at_open.unwrap_or(0),
            lifetime_peak,
            peak_at_open,
        })
    }

    pub fn version(&self) -> ChargeVersion {
        self.version
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The charge now.
    pub fn current(&self) -> Option<u64> {
        read_number(&self.current)
    }

    /// The highest charge since the last call (or since the reader was opened): the
    /// kernel's own per-descriptor window where it has one, else the lifetime high-water mark
    /// when it rose. None when neither says anything (callers then rely on sampling).
    pub fn interval_peak(&mut self) -> Option<IntervalPeak> {
        if let Some(file) = self.window_peak.as_mut() {
            let peak = read_number(file);
            if reset_peak(file) {
                return peak.map(IntervalPeak::Window);
            }
            // The reset stopped working (it never should): fall back to records.
            self.window_peak = None;
        }
        let lifetime = read_number(self.lifetime_peak.as_ref()?)?;
        if lifetime > self.last_lifetime_peak {
            self.last_lifetime_peak = lifetime;
            return Some(IntervalPeak::NewRecord(lifetime));
        }
        None
    }

    /// Whether [`Self::interval_peak`] gives exact windows (v2 with per-descriptor resets).
    pub fn has_windows(&self) -> bool {
        self.window_peak.is_some()
    }

    /// The kernel's high-water mark over the cgroup's life, and where it came from. v1's
    /// `max_usage_in_bytes` is read, never reset: other readers rely on it.
    pub fn lifetime_peak(&self) -> Option<(u64, &'static str)> {
        let read = |name: &str| {
            fs::File::open(self.dir.join(name))
                .ok()
                .and_then(|f| read_number(&f))
        };
        match self.version {
            ChargeVersion::V2 => read("memory.peak").map(|peak| (peak, "memory.peak")),
            ChargeVersion::V1 => {
                read("memory.max_usage_in_bytes").map(|peak| (peak, "memory.max_usage_in_bytes"))
            }
        }
    }

    /// The cgroup's lifetime high-water mark when this reader was opened, and its file.
    pub fn peak_at_open(&self) -> Option<(u64, &'static str)> {
        let file = match self.version {
            ChargeVersion::V2 => "memory.peak",
            ChargeVersion::V1 => "memory.max_usage_in_bytes",
        };
        self.peak_at_open.map(|peak| (peak, file))
    }

    /// Microseconds all of the cgroup's tasks were stalled on memory at once, over its life
    /// (PSI `memory.pressure`, the `full` line's total): reclaim that held the workload up.
    /// None on v1 and where the kernel has no PSI.
    pub fn pressure_full_us(&self) -> Option<u64> {
        match self.version {
            ChargeVersion::V2 => parse_pressure_total(
                &fs::read_to_string(self.dir.join("memory.pressure")).ok()?,
                "full",
            ),
            ChargeVersion::V1 => None,
        }
    }

    /// Page cache the kernel drops before it OOM-kills: clean file pages that no process
    /// maps. What is left of the charge (anonymous memory, shmem and tmpfs, kernel memory,
    /// dirty and writeback pages, mapped files such as the program's own code) is what the
    /// workload needs to run; see [`reclaimable_cache_in`].
    pub fn reclaimable_cache(&self) -> Option<u64> {
        reclaimable_cache_in(
            &fs::read_to_string(self.dir.join("memory.stat")).ok()?,
            self.version,
        )
    }

    /// The effective limit: the lowest of this cgroup's and its ancestors'. None: unlimited.
    pub fn limit(&self) -> Option<u64> {
        match self.version {
            ChargeVersion::V1 => {
                read_key(&self.dir.join("memory.stat"), "hierarchical_memory_limit")
                    .filter(|&limit| limit < V1_UNLIMITED)
            }
            ChargeVersion::V2 => {
                let mut lowest: Option<u64> = None;
                let mut dir = Some(self.dir.as_path());
                while let Some(current) = dir {
                    match fs::read_to_string(current.join("memory.max")) {
                        Ok(text) => {
                            if let Ok(limit) = text.trim().parse::<u64>() {
                                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
                            }
                        }
                        Err(_) => break,
                    }
                    dir = current.parent();
                }
                lowest
            }
        }
    }

    /// OOM kills the kernel counted in this cgroup (v2 memory.events, v1 memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        match self.version {
            ChargeVersion::V2 => read_key(&self.dir.join("memory.events"), "oom_kill"),
            ChargeVersion::V1 => read_key(&self.dir.join("memory.oom_control"), "oom_kill"),
        }
    }

    /// Sets the cgroup's own limit (capture `--memory-limit`).
    pub fn set_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let file = match self.version {
            ChargeVersion::V2 => self.dir.join("memory.max"),
            ChargeVersion::V1 => self.dir.join("memory.limit_in_bytes"),
        };
        fs::write(&file, bytes.to_string())
            .map_err(|source| CgroupError::Create { path: file, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaimable_cache_is_clean_unmapped_file_pages() {
        let mib = 1u64 << 20;
        let stat = format!(
            "anon {}\nfile {}\nshmem {}\nfile_mapped {}\nfile_dirty {}\nfile_writeback 0\ninactive_file {}\n",
            40 * mib,
            400 * mib,
            10 * mib,
            20 * mib,
            8 * mib,
            mib
        );
        // 400 MiB of file pages, of which 10 shmem, 20 mapped and 8 dirty: 362 MiB can go,
        // though only 1 MiB is on the inactive list.
        assert_eq!(
            reclaimable_cache_in(&stat, ChargeVersion::V2),
            Some(362 * mib)
        );
        assert_eq!(reclaimable_cache_in("anon 1\n", ChargeVersion::V2), None);
        // More held than file (shmem mapped is in both): nothing reclaimable, not a wrap.
        assert_eq!(
            reclaimable_cache_in(
                "total_cache 10\ntotal_shmem 8\ntotal_mapped_file 8\n",
                ChargeVersion::V1
            ),
            Some(0)
        );
    }

    #[test]
    fn memory_files_parse_or_give_none() {
        let stat = "anon 104857600\ninactive_file 1024000\noom_kill x\noom_kill 3\n";
        assert_eq!(parse_key(stat, "inactive_file"), Some(1_024_000));
        assert_eq!(parse_key(stat, "oom_kill"), Some(3));
        assert_eq!(parse_key(stat, "file"), None);
        assert_eq!(parse_key("", "anon"), None);
        assert_eq!(parse_number(b"268435456\n"), Some(268_435_456));
        assert_eq!(parse_number(b"max\n"), None);
        assert_eq!(parse_number(&[0xff, b'1']), None);
        let pressure = "some avg10=0.00 avg60=0.00 avg300=0.00 total=5000\nfull avg10=1.50 avg60=0.20 avg300=0.05 total=1234\n";
        assert_eq!(parse_pressure_total(pressure, "full"), Some(1234));
        assert_eq!(parse_pressure_total(pressure, "some"), Some(5000));
        assert_eq!(parse_pressure_total("fullx total=3\n", "full"), None);
        assert_eq!(parse_pressure_total("", "full"), None);
    }

    #[test]
    fn charge_reader_reads_v1_files() {
        let dir = std::env::temp_dir().join(format!("headroom-charge-v1-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fixture");
        fs::write(dir.join("memory.usage_in_bytes"), "1048576\n").expect("fixture");
        fs::write(dir.join("memory.max_usage_in_bytes"), "4194304\n").expect("fixture");
        fs::write(
            dir.join("memory.stat"),
            "cache 0\nhierarchical_memory_limit 9223372036854771712\ntotal_cache 12288\ntotal_mapped_file 4096\ntotal_dirty 4096\n",
        )
        .expect("fixture");
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("fixture");
        let missing_v2 = dir.join("no-such-unified");
        let reader = ChargeReader::open(&missing_v2, Some(&dir)).expect("v1 reader");
        assert_eq!(reader.version(), ChargeVersion::V1);
        assert_eq!(reader.current(), Some(1 << 20));
        assert_eq!(
            reader.lifetime_peak(),
            Some((4 << 20, "memory.max_usage_in_bytes"))
        );
        assert_eq!(reader.reclaimable_cache(), Some(4096));
        assert_eq!(
            reader.peak_at_open(),
            Some((4 << 20, "memory.max_usage_in_bytes"))
        );
        assert_eq!(reader.limit(), None);
        assert_eq!(reader.oom_kills(), Some(2));
        fs::write(
            dir.join("memory.stat"),
            "hierarchical_memory_limit 67108864\n",
        )
        .expect("fixture");
        assert_eq!(reader.limit(), Some(64 << 20));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn charge_reader_reads_v2_files_and_the_lowest_ancestor_limit() {
        let base = std::env::temp_dir().join(format!("headroom-charge-v2-{}", std::process::id()));
        let dir = base.join("pod/container");
        fs::create_dir_all(&dir).expect("fixture");
        fs::write(base.join("memory.max"), "max\n").expect("fixture");
        fs::write(base.join("pod/memory.max"), "268435456\n").expect("fixture");
        fs::write(dir.join("memory.max"), "536870912\n").expect("fixture");
        fs::write(dir.join("memory.current"), "123\n").expect("fixture");
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("fixture");
        fs::write(
            dir.join("memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=90\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=40\n",
        )
        .expect("fixture");
        let reader = ChargeReader::open(&dir, None).expect("v2 reader");
        assert_eq!(reader.version(), ChargeVersion::V2);
        assert_eq!(reader.current(), Some(123));
        assert_eq!(reader.pressure_full_us(), Some(40));
        assert_eq!(reader.limit(), Some(256 << 20));
        assert_eq!(reader.oom_kills(), Some(1));
        fs::remove_dir_all(&base).expect("cleanup");
    }
}
