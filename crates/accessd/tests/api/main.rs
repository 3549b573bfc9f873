//! Black-box tests: the real service on port 0, a fresh database per test,
//! called over HTTP. Every test runs on PostgreSQL and on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod authz;
mod binary;
mod browser;
mod client;
mod console;
mod digest;
mod exports;
mod faults;
mod feed;
mod forget;
mod helpers;
mod history;
mod hostile;
mod import;
mod lingering;
mod notice;
mod overload;
mod pages;
mod pgcluster;
mod procs;
mod protocol;
mod readiness;
mod references;
mod rehash;
mod relay;
mod roles;
mod seams;
mod second_factor;
mod secrets;
mod smtp;

/// Runs each listed `async fn(Db)` once per store.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Db::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Db::Sqlite).await;
                }
            )*
        }
    };
}
