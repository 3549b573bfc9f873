//! `accessctl rebuild [--check]`: replay every event into fresh projection
//! tables and swap them in, or rebuild aside and compare.

use access_store::prelude::*;
use std::process::ExitCode;
use std::time::Duration;

use access_projections::rebuild;
use access_store::Store;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} events [{bar:30}] {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub async fn run(store: &Store, check: bool) -> anyhow::Result<ExitCode> {
    store.migrate().await.context("migrating")?;
    let total = store.count_events().await.context("counting events")?;
    let bar = progress_bar(total);
    let mut progress = |done: u64| bar.set_position(done);
    if check {
        let report = rebuild::check(store, &mut progress)
            .await
            .context("rebuilding aside")?;
        bar.finish_and_clear();
        println!("checked at position {}", report.position);
        let mut same = true;
        for (name, live, rebuilt, live_rows, rebuilt_rows) in [
            (
                "access_state",
                &report.live.access_state,
                &report.rebuilt.access_state,
                report.live.access_state_rows,
                report.rebuilt.access_state_rows,
            ),
            (
                "audit_trail",
                &report.live.audit_trail,
                &report.rebuilt.audit_trail,
                report.live.audit_trail_rows,
                report.rebuilt.audit_trail_rows,
            ),
        ] {
            let verdict = if live == rebuilt { "same" } else { "DIFFERENT" };
            same &= live == rebuilt;
            println!("{name:<13} live {live} ({live_rows} rows)  rebuilt {rebuilt} ({rebuilt_rows} rows)  {verdict}");
        }
        if same {
            println!("the projections match a rebuild from the events");
            Ok(ExitCode::SUCCESS)
        } else {
            println!(
                "the projections differ from a rebuild from the events: run `accessctl rebuild`"
            );
            Ok(ExitCode::FAILURE)
        }
    } else {
        let report = rebuild::rebuild(store, &mut progress)
            .await
            .context("rebuilding")?;
        bar.finish_and_clear();
        println!(
            "rebuilt the projections from {} events in {:.1} s ({:.0} events/s); live at position {}",
            report.events,
            report.elapsed.as_secs_f64(),
            report.events_per_second(),
            report.position
        );
        Ok(ExitCode::SUCCESS)
    }
}
