//! A downstream consumer of the change feed on NATS JetStream
//! (docs/feed.md): a durable pull consumer that keeps its own copy of who
//! may log in, handles each event once by its position, and deletes its
//! copy of a customer on `CustomerForgotten`.
//!
//! ```sh
//! cargo run -p accessd --example feed_consumer -- nats://127.0.0.1:4222 ACCESS_EVENTS access.events
//! ```
//!
//! Compiled with the workspace (`cargo clippy --all-targets` in CI).

use std::collections::HashMap;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures::StreamExt;
use serde::Deserialize;

/// The fields of a feed item this consumer needs (the item has more:
/// sequence, event_version, recorded_at, metadata).
#[derive(Deserialize)]
struct FeedItem {
    position: String,
    customer_id: String,
    event_type: String,
    data: serde_json::Value,
}

/// `tx:global` → an ordered key (the positions' order is the feed's).
fn order(position: &str) -> Option<(u64, i64)> {
    let (tx, global) = position.split_once(':')?;
    Some((tx.parse().ok()?, global.parse().ok()?))
}

/// The consumer's own copy: login email and access per customer, and the
/// last position it applied (store it with the copy, in one transaction,
/// in a real system).
#[derive(Default)]
struct Copy {
    customers: HashMap<String, (Option<String>, bool)>,
    last: Option<(u64, i64)>,
}

impl Copy {
    fn apply(&mut self, item: &FeedItem) {
        let Some(at) = order(&item.position) else {
            return;
        };
        // Idempotent: an event at or before the last applied one was
        // handled already (a redelivery).
        if self.last.is_some_and(|last| at <= last) {
            return;
        }
        let entry = self.customers.entry(item.customer_id.clone()).or_default();
        match item.event_type.as_str() {
            "CustomerRegistered" | "EmailChanged" | "EmailChangeConfirmed" => {
                entry.0 = email_of(item).or(entry.0.take());
            }
            // A customer brought in by a bulk import (with access when the
            // import said so): like a registration.
            "CustomerImported" => {
                entry.0 = email_of(item).or(entry.0.take());
                if item.data.get("access").is_some_and(|a| !a.is_null()) {
                    entry.1 = true;
                }
            }
            "AccessGranted" => entry.1 = true,
            "AccessRevoked" => entry.1 = false,
            "CustomerForgotten" => {
                // The law says: delete every copy of the person's data.
                self.customers.remove(&item.customer_id);
            }
            _ => {}
        }
        self.last = Some(at);
    }
}

/// The login email an event carries.
fn email_of(item: &FeedItem) -> Option<String> {
    ["email", "new_email"]
        .iter()
        .find_map(|k| item.data.get(*k).and_then(|v| v.as_str()))
        .map(str::to_string)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let stream = args.next().unwrap_or_else(|| "ACCESS_EVENTS".into());
    let prefix = args.next().unwrap_or_else(|| "access.events".into());

    let client = async_nats::connect(&url).await.context("connect to NATS")?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&stream).await.context("the stream")?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "portal-sessions",
            pull::Config {
                durable_name: Some("portal-sessions".into()),
                ack_policy: AckPolicy::Explicit,
                filter_subject: format!("{prefix}.>"),
                ..Default::default()
            },
        )
        .await
        .context("the durable consumer")?;
    let mut messages = consumer.messages().await.context("pull messages")?;
    let mut copy = Copy::default();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("receive: {e}"))?;
        match serde_json::from_slice::<FeedItem>(&message.payload) {
            Ok(item) => {
                copy.apply(&item);
                println!(
                    "{} {} {} ({} customers known)",
                    item.position,
                    item.event_type,
                    item.customer_id,
                    copy.customers.len()
                );
            }
            Err(e) => eprintln!("skipping a message that is not a feed item: {e}"),
        }
        // Acknowledge after applying: a crash before this redelivers, and
        // `apply` ignores what it has seen.
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(position: &str, event_type: &str, data: serde_json::Value) -> FeedItem {
        FeedItem {
            position: position.into(),
            customer_id: "c1".into(),
            event_type: event_type.into(),
            data,
        }
    }

    #[test]
    fn an_imported_customer_is_known_like_a_registered_one() {
        let mut copy = Copy::default();
        copy.apply(&item(
            "0:1",
            "CustomerImported",
            serde_json::json!({"email": "ann@example.com", "access": "customer"}),
        ));
        assert_eq!(
            copy.customers.get("c1"),
            Some(&(Some("ann@example.com".to_string()), true))
        );
        copy.apply(&item("0:2", "CustomerForgotten", serde_json::json!({})));
        assert!(copy.customers.is_empty());
    }
}
