//! # access-scenarios
//!
//! Scenario files are the access rules written as examples, by people who
//! need not read Rust: stored events (`given`), one command (`when`), and
//! the events it must emit or the error it must be refused with (`then`).
//! The format is described in `tests/scenarios/README.md`.
//!
//! This crate is the one runner of those files. The test suite runs
//! `tests/scenarios/` through it (`crates/scenarios/tests/scenarios.rs`),
//! and the shipped `accessctl scenarios run DIR…` runs any directory
//! through it, with a JUnit XML report for CI systems. Both decide the
//! commands with the domain crate they are built with, using fakes for
//! hashing, tokens and the clock, so that a file can name the expected
//! hash (`hash-of:PLAIN`), token digest (`digest-of:TOKEN`) and times.
//!
//! ```no_run
//! # async fn example() -> Result<(), access_scenarios::ScenarioError> {
//! let report = access_scenarios::run_paths(&["tests/scenarios".into()]).await?;
//! for case in &report.cases {
//!     println!("{}", case.line());
//! }
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod command;
mod compare;
mod format;
mod run;

pub use command::COMMANDS;

use crate::format::Scenario;
use crate::run::Failure;

/// Why a set of scenarios could not be run at all (as opposed to a
/// scenario that fails, which is part of the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no scenario files (*.yaml) found under {0}")]
    NoScenarios(String),
    #[error("cannot write the JUnit report: {0}")]
    Junit(String),
}

/// How one scenario file went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Why, as a report for people: what the file expects and what the
    /// aggregate did, side by side.
    Failed(String),
}

/// One scenario file and its outcome.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The file's path relative to the directory it was found under.
    pub file: String,
    /// The scenario's `name:` (None when the file could not be read).
    pub name: Option<String>,
    pub outcome: Outcome,
    pub time: Duration,
}

impl CaseResult {
    /// `ok    FILE` or `FAIL  FILE`, one line.
    pub fn line(&self) -> String {
        match self.outcome {
            Outcome::Passed => format!("ok    {}", self.file),
            Outcome::Failed(_) => format!("FAIL  {}", self.file),
        }
    }
}

/// The outcome of every scenario file that was run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| c.outcome == Outcome::Passed)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// Every failure with its explanation, for a terminal or a test's
    /// panic message (empty when all passed).
    pub fn failures(&self) -> String {
        let mut out = String::new();
        for case in &self.cases {
            if let Outcome::Failed(why) = &case.outcome {
                let _ = write!(out, "\nFAIL {}\n{why}", case.file);
            }
        }
        out
    }

    /// The report as JUnit XML (one test suite `scenarios`, one test case
    /// per file), which CI systems show as test results.
    pub fn junit_xml(&self) -> Result<String, ScenarioError> {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new("scenarios");
        for case in &self.cases {
            let status = match &case.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Failed(why) => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status
                        .set_message(first_line(why))
                        .set_description(why.as_str());
                    status
                }
            };
            let mut test = TestCase::new(case.file.as_str(), status);
            test.set_classname("scenarios").set_time(case.time);
            if let Some(name) = &case.name {
                test.add_property(quick_junit::Property::new("name", name.as_str()));
            }
            suite.add_test_case(test);
        }
        let mut report = quick_junit::Report::new("access-scenarios");
        report.add_test_suite(suite);
        report
            .to_string()
            .map_err(|e| ScenarioError::Junit(e.to_string()))
    }
}

/// The first line of a failure report after its heading (the scenario's
/// name and notice): what went wrong, in one line.
fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("scenario:") && !l.starts_with("notice:"))
        .unwrap_or("failed")
        .to_string()
}

/// Runs one scenario given as YAML text: `Ok` when the aggregate does what
/// it says, else the explanation.
pub async fn run_yaml(text: &str) -> Result<(), String> {
    let scenario: Scenario = serde_norway::from_str(text)
        .map_err(|e| format!("  the file is not a valid scenario: {e}\n"))?;
    run::run(&scenario).await.map_err(|failure| {
        let mut heading = format!("  scenario: {}\n", scenario.name);
        if let Some(notice) = &scenario.notice {
            let _ = writeln!(heading, "  notice:   {notice}");
        }
        match failure {
            Failure::Broken(problem) => {
                format!("{heading}  the scenario cannot run: {problem}\n")
            }
            Failure::Mismatch(report) => format!("{heading}{report}"),
        }
    })
}

/// Runs every `*.yaml` file under each path (a directory, searched
/// recursively without following links to directories, or a file), in
/// path order; the extension in any case. A `.yml` file is a failure (so
/// it cannot be skipped unnoticed); other files are ignored. No scenario
/// file at all is [`ScenarioError::NoScenarios`].
pub async fn run_paths(paths: &[PathBuf]) -> Result<Report, ScenarioError> {
    let mut report = Report::default();
    for root in paths {
        for path in files_under(root)? {
            let file = relative(root, &path);
            let started = Instant::now();
            let extension = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let (name, outcome) = match extension.as_deref() {
                Some("yaml") => run_file(&path).await,
                Some("yml") => (
                    None,
                    Outcome::Failed(
                        "  scenario files must end in `.yaml`, not `.yml`\n".to_string(),
                    ),
                ),
                _ => continue,
            };
            report.cases.push(CaseResult {
                file,
                name,
                outcome,
                time: started.elapsed(),
            });
        }
    }
    if report.cases.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ScenarioError::NoScenarios(shown.join(", ")));
    }
    Ok(report)
}

async fn run_file(path: &Path) -> (Option<String>, Outcome) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return (
                None,
                Outcome::Failed(format!("  cannot read the file: {e}\n")),
            )
        }
    };
    let name = serde_norway::from_str::<Scenario>(&text)
        .ok()
        .map(|s| s.name);
    match run_yaml(&text).await {
        Ok(()) => (name, Outcome::Passed),
        Err(why) => (name, Outcome::Failed(why)),
    }
}

/// `path` relative to `root` (the file name alone when `root` is the file).
fn relative(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// Every file under `root` (or `root` itself when it is a file),
/// recursively, sorted.
fn files_under(root: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let unreadable = |path: &Path, source| ScenarioError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(|e| unreadable(root, e))?;
    if !meta.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| unreadable(&dir, e))? {
            let entry = entry.map_err(|e| unreadable(&dir, e))?;
            let path = entry.path();
            // Not followed through a symbolic link to a directory: a link
            // back up the tree would loop.
            let is_dir = entry
                .file_type()
                .map_err(|e| unreadable(&path, e))?
                .is_dir();
            if is_dir {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
