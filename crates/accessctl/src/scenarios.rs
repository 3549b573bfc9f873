//! `accessctl scenarios run DIR…`: the scenario files checked against the
//! rules this binary was built with, through the same runner as the test
//! suite (`access-scenarios`), for testers who do not use cargo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum ScenariosCommand {
    /// Run every `*.yaml` file under the directories (or the files named):
    /// one line per scenario, then `N passed, N failed`; exit 1 when any
    /// fails, with the expected and the actual events side by side.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directories (searched recursively) or scenario files.
    #[arg(required = true, value_name = "DIR")]
    pub paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file (for CI systems).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

pub async fn run(command: &ScenariosCommand) -> anyhow::Result<ExitCode> {
    let ScenariosCommand::Run(args) = command;
    let report = access_scenarios::run_paths(&args.paths).await?;
    for case in &report.cases {
        println!("{}", case.line());
    }
    let failures = report.failures();
    if !failures.is_empty() {
        println!("{failures}");
    }
    if let Some(path) = &args.junit {
        let xml = report.junit_xml()?;
        std::fs::write(path, xml)
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    println!("{}", report.summary());
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
