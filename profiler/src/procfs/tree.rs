//! Process trees, from the ppid field of /proc/PID/stat.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use super::read_proc_file;

/// A process and all its living descendants, from the ppid field of /proc/*/stat.
pub fn process_tree(root: &Path, pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir(root.join("proc")) {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) = read_proc_file(root, Some(child), "stat")
                .ok()
                .and_then(|stat| parent_pid(&stat))
            {
                children.entry(parent).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut seen: HashSet<u32> = HashSet::from([pid]);
    let mut index = 0;
    while index < tree.len() {
        for &child in children
            .get(&tree[index])
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if seen.insert(child) {
                tree.push(child);
            }
        }
        index += 1;
    }
    tree
}

/// The ppid field of a /proc/PID/stat text (after the parenthesised command, which may itself
/// contain spaces and parentheses).
pub fn parent_pid(stat: &str) -> Option<u32> {
    let (_, after_command) = stat.rsplit_once(')')?;
    after_command.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_pid_past_a_tricky_command() {
        assert_eq!(parent_pid("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("no parens"), None);
    }

    #[test]
    fn builds_a_process_tree_from_a_fixture() {
        let root = std::env::temp_dir().join(format!("headroom-proc-{}", std::process::id()));
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 1)] {
            let dir = root.join(format!("proc/{pid}"));
            fs::create_dir_all(&dir).expect("fixture");
            fs::write(dir.join("stat"), format!("{pid} (x) S {ppid} 0 0")).expect("fixture");
        }
        let mut tree = process_tree(&root, 10);
        tree.sort_unstable();
        assert_eq!(tree, vec![10, 11, 12]);
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
