//! Every reference resolves inside the repository: no file points a reader
//! at notes on someone's machine, and every relative link in the docs
//! leads to a file of this repository.

use std::path::{Path, PathBuf};

/// The repository's root (this crate is `crates/accessd`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every text file of the repository (build output and git excluded).
fn text_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == ".git" || name == "target" || name == "node_modules" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            text_files(&path, out);
        } else if kind.is_file() && entry.metadata().unwrap().len() < 2_000_000 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }
}

/// Paths that only exist outside the repository (a shared notes folder,
/// a developer's checkout), spelled in pieces so this file does not match.
fn outside_markers() -> Vec<String> {
    vec![
        ["/wo", "rk/"].concat(),
        ["../sha", "red"].concat(),
        ["sha", "red/"].concat(),
        ["sha", "red notes"].concat(),
        ["no", "tes/"].concat(),
        ["STYLE", ".md"].concat(),
        ["cqrs-es-0.5", ".md"].concat(),
    ]
}

#[test]
fn every_reference_resolves_inside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    text_files(&root, &mut files);
    assert!(files.len() > 50, "the repository was not found at {root:?}");
    let this_file = root.join("crates/accessd/tests/api/references.rs");
    let markers = outside_markers();
    let mut problems = Vec::new();
    for (path, text) in &files {
        if *path == this_file {
            continue;
        }
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        for (number, line) in text.lines().enumerate() {
            for marker in &markers {
                if line.contains(marker.as_str()) {
                    problems.push(format!(
                        "{shown}:{}: points outside the repository (`{marker}`)",
                        number + 1
                    ));
                }
            }
        }
        if path.extension().is_some_and(|e| e == "md") {
            for target in markdown_links(text) {
                let file_part = target.split('#').next().unwrap_or_default();
                if file_part.is_empty() {
                    continue;
                }
                let resolved = path.parent().unwrap().join(file_part);
                match resolved.canonicalize() {
                    Ok(found) if found.starts_with(&root) => {}
                    Ok(_) => {
                        problems.push(format!("{shown}: link `{target}` leaves the repository"))
                    }
                    Err(_) => problems.push(format!("{shown}: link `{target}` leads nowhere")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The targets of `[text](target)` links that are relative paths.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        let external = target.contains("://")
            || target.starts_with("mailto:")
            || target.starts_with('#')
            || target.is_empty()
            || target.contains(char::is_whitespace);
        if !external {
            links.push(target.to_string());
        }
        rest = &rest[end..];
    }
    links
}
