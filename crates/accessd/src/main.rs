//! `accessd`: serves the access API. With no arguments it runs on the
//! embedded SQLite default (`access.db`) with mail written to `mail/`.

use std::process::ExitCode;

use accessd::{Config, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Colours only for a person at a terminal: never when stderr is a file,
/// a pipe or a log collector, nor when `NO_COLOR` is set (no-color.org).
fn colours_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_wanted())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(&config);
    let running = match accessd::start(config, shutdown_signal()).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("accessd: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(secret) = &running.created_admin_key {
        // Shown once, on stdout, never logged: only its hash is kept.
        println!(
            "accessd: no API keys were configured, so an admin key named `{}` was created.\n\
             accessd: its secret is shown this once (only its hash is kept): {secret}",
            accessd::app::FIRST_ADMIN_KEY
        );
    }
    println!(
        "accessd: listening on http://{} (links in emails use {})",
        running.addr, running.public_url
    );
    match running.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accessd: server error: {e}");
            ExitCode::FAILURE
        }
    }
}
