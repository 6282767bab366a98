//! Folded stacks and flame graph SVGs (inferno) from a session's stack profile.

use std::io::Write;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FlameGraphError {
    #[error("no stacks were sampled, so there is no flame graph to draw (was the target idle, or stack sampling off?)")]
    NoStacks,
    #[error("writing {path} failed")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes folded stacks, one `frame;frame;frame bytes` line each (root first).
pub fn write_folded(lines: &[String], path: &Path) -> Result<(), FlameGraphError> {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(path, text).map_err(|source| FlameGraphError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Draws the folded stacks as an SVG flame graph whose widths are bytes.
pub fn render_svg(lines: &[String], title: &str) -> Result<Vec<u8>, FlameGraphError> {
    if lines.is_empty() {
        return Err(FlameGraphError::NoStacks);
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.subtitle = Some(
        "resident: bytes faulted in (byte-weighted samples); reserved: large mmap/brk".to_owned(),
    );
    options.count_name = "bytes".to_owned();
    options.name_type = "Function:".to_owned();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|source| FlameGraphError::Write {
            path: "flame graph".to_owned(),
            source,
        })?;
    Ok(svg)
}

/// Renders and writes the SVG.
pub fn write_svg(lines: &[String], title: &str, path: &Path) -> Result<(), FlameGraphError> {
    let svg = render_svg(lines, title)?;
    std::fs::File::create(path)
        .and_then(|mut file| file.write_all(&svg).and_then(|()| file.sync_all()))
        .map_err(|source| FlameGraphError::Write {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_names_the_frames() {
        let lines = vec![
            "resident;main;build_cache 209715200".to_owned(),
            "resident;main;load_base 41943040".to_owned(),
        ];
        let svg = String::from_utf8(render_svg(&lines, "test").expect("svg")).expect("utf8");
        assert!(svg.contains("build_cache"));
        assert!(svg.contains("<svg"));
        assert!(matches!(
            render_svg(&[], "t"),
            Err(FlameGraphError::NoStacks)
        ));
    }
}
