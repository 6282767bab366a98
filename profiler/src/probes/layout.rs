//! Tracepoint record layouts, read from the kernel's tracefs `format` files at load time.
//!
//! The programs read most record fields at fixed offsets (`profiler_common::FIXED_FIELDS`);
//! those are checked here, so a kernel with another layout is refused with the field named
//! instead of being misread. Fields that some supported kernels lack, or place elsewhere, are
//! looked up and handed to the programs as load-time globals:
//! - sched_process_exit's `group_dead` (Linux 6.16+);
//! - oom:mark_victim's `total_vm`, `anon_rss`, `file_rss`, `shmem_rss` (upstream 6.9+; some
//!   distribution kernels backport them: Debian's 6.1 has them).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use profiler_common::FIXED_FIELDS;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error(
        "cannot read the record layout of tracepoint {category}:{event} from {path}; headroom \
         reads it to know where the kernel puts each field. Check that tracefs is mounted and \
         readable (`mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    Unreadable {
        category: &'static str,
        event: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "tracepoint {category}:{event} has no field `{field}` on this kernel ({path}); headroom \
         reads it at offset {offset}. This kernel's layout is not supported yet: please report \
         it with the content of that file"
    )]
    FieldMissing {
        category: &'static str,
        event: &'static str,
        field: &'static str,
        offset: usize,
        path: PathBuf,
    },
    #[error(
        "tracepoint {category}:{event} puts `{field}` at offset {actual_offset} (size \
         {actual_size}) on this kernel, where headroom reads offset {offset} (size {size}). \
         This kernel's layout is not supported yet: please report it with the content of {path}"
    )]
    FieldMoved {
        category: &'static str,
        event: &'static str,
        field: &'static str,
        offset: usize,
        size: usize,
        actual_offset: usize,
        actual_size: usize,
        path: PathBuf,
    },
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Parses the fields of a tracefs `format` file (`field:TYPE NAME; offset:N; size:N; ...`).
/// Lines that do not parse are skipped: the checks then report the field they needed missing.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<Field> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(rest) = part.strip_prefix("field:") {
            declaration = Some(rest.trim());
        } else if let Some(rest) = part.strip_prefix("offset:") {
            offset = rest.trim().parse().ok();
        } else if let Some(rest) = part.strip_prefix("size:") {
            size = rest.trim().parse().ok();
        }
    }
    // The name is the declaration's last word, without an array suffix (`char comm[16]`).
    let name = declaration?.rsplit(' ').next()?;
    let name = name.split('[').next()?.to_owned();
    Some(Field {
        name,
        offset: offset?,
        size: size?,
    })
}

/// The record layouts of one kernel, as far as the programs care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordLayouts {
    /// Offset of sched_process_exit's `group_dead`, where the record has it (Linux 6.16+).
    pub exit_group_dead: Option<usize>,
    /// Offsets of oom:mark_victim's `total_vm`, `anon_rss`, `file_rss`, `shmem_rss` (8-byte
    /// fields in kB), where the record has all four.
    pub oom_victim_sizes: Option<[usize; 4]>,
}

/// Reads the `format` file of every tracepoint the programs read, checks the fixed fields and
/// finds the optional ones. `tracefs` is its mount point.
pub fn read_layouts(tracefs: &Path) -> Result<RecordLayouts, LayoutError> {
    let read = |category: &'static str, event: &'static str| {
        let path = tracefs
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Ok((parse_format(&text), path)),
            Err(source) => Err(LayoutError::Unreadable {
                category,
                event,
                path,
                source,
            }),
        }
    };
    let mut cached: Vec<(&str, &str, Vec<Field>, PathBuf)> = Vec::new();
    for (category, event, field, offset, size) in FIXED_FIELDS {
        let index = match cached
            .iter()
            .position(|(c, e, _, _)| *c == category && *e == event)
        {
            Some(index) => index,
            None => {
                let (fields, path) = read(category, event)?;
                cached.push((category, event, fields, path));
                cached.len() - 1
            }
        };
        let (_, _, fields, path) = &cached[index];
        check_fixed(fields, path, (category, event, field, offset, size))?;
    }
    let (exit_fields, _) = read("sched", "sched_process_exit")?;
    let (victim_fields, _) = read("oom", "mark_victim")?;
    Ok(RecordLayouts {
        exit_group_dead: find(&exit_fields, "group_dead", 1),
        oom_victim_sizes: oom_victim_sizes(&victim_fields),
    })
}

fn check_fixed(
    fields: &[Field],
    path: &Path,
    (category, event, field, offset, size): profiler_common::FixedField,
) -> Result<(), LayoutError> {
    let Some(found) = fields.iter().find(|candidate| candidate.name == field) else {
        return Err(LayoutError::FieldMissing {
            category,
            event,
            field,
            offset,
            path: path.to_path_buf(),
        });
    };
    if found.offset != offset || found.size != size {
        return Err(LayoutError::FieldMoved {
            category,
            event,
            field,
            offset,
            size,
            actual_offset: found.offset,
            actual_size: found.size,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The offset of a field of the given size, if the record has it. Offset 0 is never a
/// record field (the common header is there), which lets the programs use 0 for "absent".
fn find(fields: &[Field], name: &str, size: usize) -> Option<usize> {
    fields
        .iter()
        .find(|field| field.name == name && field.size == size && field.offset >= 8)
        .map(|field| field.offset)
}

fn oom_victim_sizes(fields: &[Field]) -> Option<[usize; 4]> {
    Some([
        find(fields, "total_vm", 8)?,
        find(fields, "anon_rss", 8)?,
        find(fields, "file_rss", 8)?,
        find(fields, "shmem_rss", 8)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Read off Debian 12's 6.1 kernel and the 6.18 host.
    const EXIT_6_1: &str = "name: sched_process_exit\nID: 301\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\n\
        print fmt: \"comm=%s pid=%d prio=%d\", REC->comm, REC->pid, REC->prio\n";
    const EXIT_6_18_TAIL: &str = "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
    const VICTIM_PID_ONLY: &str = "\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
    const VICTIM_FULL: &str = "\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
        \tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;\n\
        \tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;\n";

    #[test]
    fn parses_names_offsets_and_sizes_including_arrays_and_data_loc() {
        let fields = parse_format(EXIT_6_1);
        let comm = fields.iter().find(|f| f.name == "comm").expect("comm");
        assert_eq!((comm.offset, comm.size), (8, 16));
        assert_eq!(find(&fields, "pid", 4), Some(24));
        let victim = parse_format(VICTIM_FULL);
        assert!(victim.iter().any(|f| f.name == "comm" && f.offset == 12));
        assert!(parse_format("garbage\nfield:int x; offset:zz; size:4;\n").is_empty());
    }

    #[test]
    fn group_dead_is_found_only_where_the_record_has_it() {
        assert_eq!(find(&parse_format(EXIT_6_1), "group_dead", 1), None);
        let with = format!("{EXIT_6_1}{EXIT_6_18_TAIL}");
        assert_eq!(find(&parse_format(&with), "group_dead", 1), Some(32));
    }

    #[test]
    fn oom_sizes_need_all_four_fields() {
        assert_eq!(oom_victim_sizes(&parse_format(VICTIM_PID_ONLY)), None);
        assert_eq!(
            oom_victim_sizes(&parse_format(VICTIM_FULL)),
            Some([16, 24, 32, 40])
        );
    }

    fn fake_tracefs(dir: &Path, exit_tail: &str, victim: &str) {
        for (category, event, _, _, _) in FIXED_FIELDS {
            fs::create_dir_all(dir.join("events").join(category).join(event)).expect("dir");
        }
        // Every fixed field where the programs expect it, one format file per tracepoint.
        let mut texts: Vec<(String, String)> = Vec::new();
        for (category, event, field, offset, size) in FIXED_FIELDS {
            let key = format!("{category}/{event}");
            let line =
                format!("\tfield:long {field};\toffset:{offset};\tsize:{size};\tsigned:0;\n");
            match texts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, text)) => text.push_str(&line),
                None => texts.push((key, line)),
            }
        }
        for (key, text) in texts {
            fs::write(dir.join("events").join(key).join("format"), text).expect("write");
        }
        fs::create_dir_all(dir.join("events/sched/sched_process_exit")).expect("dir");
        fs::write(
            dir.join("events/sched/sched_process_exit/format"),
            format!("{EXIT_6_1}{exit_tail}"),
        )
        .expect("write");
        fs::write(dir.join("events/oom/mark_victim/format"), victim).expect("write");
    }

    #[test]
    fn reads_layouts_of_an_old_and_a_new_kernel() {
        let dir = std::env::temp_dir().join(format!("headroom-layout-{}", std::process::id()));
        fake_tracefs(&dir, "", VICTIM_PID_ONLY);
        assert_eq!(
            read_layouts(&dir).expect("6.1-like"),
            RecordLayouts::default()
        );
        fake_tracefs(&dir, EXIT_6_18_TAIL, VICTIM_FULL);
        assert_eq!(
            read_layouts(&dir).expect("6.18-like"),
            RecordLayouts {
                exit_group_dead: Some(32),
                oom_victim_sizes: Some([16, 24, 32, 40]),
            }
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_moved_or_missing_fixed_field_is_named() {
        let dir = std::env::temp_dir().join(format!("headroom-moved-{}", std::process::id()));
        fake_tracefs(&dir, "", VICTIM_PID_ONLY);
        fs::write(
            dir.join("events/kmem/rss_stat/format"),
            "\tfield:unsigned int mm_id;\toffset:8;\tsize:4;\tsigned:0;\n\
             \tfield:unsigned int curr;\toffset:12;\tsize:4;\tsigned:0;\n\
             \tfield:int member;\toffset:16;\tsize:4;\tsigned:1;\n\
             \tfield:long size;\toffset:32;\tsize:8;\tsigned:1;\n",
        )
        .expect("write");
        let err = read_layouts(&dir).expect_err("size moved");
        let message = err.to_string();
        assert!(
            message.contains("kmem:rss_stat") && message.contains("`size` at offset 32"),
            "{message}"
        );
        fs::write(dir.join("events/kmem/rss_stat/format"), "").expect("write");
        let err = read_layouts(&dir).expect_err("fields missing");
        assert!(err.to_string().contains("no field `mm_id`"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
