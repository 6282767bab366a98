//! Where the CLI's output goes: reports and recommendations to a file, stdout or stderr, and
//! the early check that an output file can be written at all.

use std::{io::Write as _, path::Path};

/// Writes output to FILE, stdout ("-"), or the default destination.
pub(super) fn emit(
    output: Option<&Path>,
    rendered: &str,
    default_to_stderr: bool,
) -> anyhow::Result<()> {
    match output {
        Some(path) if path.as_os_str() != "-" => std::fs::write(path, rendered).map_err(|err| {
            anyhow::anyhow!(
                "cannot write the report to {}: {err} (check the directory exists and has room)",
                path.display()
            )
        }),
        None if default_to_stderr => {
            eprint!("\n{rendered}");
            Ok(())
        }
        _ => Ok(std::io::stdout().lock().write_all(rendered.as_bytes())?),
    }
}

/// Checks that a file can be created at `path` (its directory exists and is writable).
pub(super) fn check_writable(path: &Path) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        anyhow::bail!(
            "cannot write {}: directory {} does not exist (create it or choose another path)",
            path.display(),
            directory.display()
        );
    }
    nix::unistd::access(directory, nix::unistd::AccessFlags::W_OK).map_err(|err| {
        anyhow::anyhow!(
            "cannot write {}: directory {} is not writable ({err})",
            path.display(),
            directory.display()
        )
    })
}
