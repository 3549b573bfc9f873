//! Writing the replayed events into the scratch store: consecutive events
//! with the same metadata are one command's and go in one append, with the
//! customer's state before and after, the way the service wrote them.

use access_store::prelude::*;
use std::collections::HashMap;

use access_domain::{CommandMetadata, Customer, CustomerEvent, CustomerId};
use access_store::{Append, Store};
use anyhow::{bail, Context};

use super::input::Parsed;

/// A customer being rebuilt in the scratch store.
struct Stream {
    customer: Customer,
    version: u64,
}

/// Consecutive events of one command (same customer, same metadata).
struct Group {
    customer_id: CustomerId,
    metadata: CommandMetadata,
    first_line: usize,
    last_line: usize,
    events: Vec<CustomerEvent>,
}

async fn append(
    store: &Store,
    streams: &mut HashMap<CustomerId, Stream>,
    group: Group,
) -> anyhow::Result<()> {
    let stream = streams
        .get_mut(&group.customer_id)
        .context("internal: a group without its stream")?;
    let before = stream.customer.clone();
    let mut after = before.clone();
    for event in &group.events {
        cqrs_es::Aggregate::apply(&mut after, event.clone());
    }
    let lines = if group.first_line == group.last_line {
        format!("line {}", group.first_line)
    } else {
        format!("lines {}-{}", group.first_line, group.last_line)
    };
    store
        .append(Append {
            customer_id: group.customer_id,
            expected_version: stream.version,
            events: &group.events,
            metadata: &group.metadata,
            before: &before,
            after: &after,
            idempotency: None,
        })
        .await
        .with_context(|| format!("{lines}: writing to the scratch store"))?;
    stream.version += group.events.len() as u64;
    stream.customer = after;
    Ok(())
}

/// Appends the events, a command at a time; returns the customers in the
/// order of their registration.
pub(super) async fn load(store: &Store, events: Vec<Parsed>) -> anyhow::Result<Vec<CustomerId>> {
    let mut order = Vec::new();
    let mut streams: HashMap<CustomerId, Stream> = HashMap::new();
    let mut current: Option<CustomerId> = None;
    let mut group: Option<Group> = None;
    for parsed in events {
        let n = parsed.line;
        let id = match &parsed.event {
            // A stream starts with its registration, or with its import.
            CustomerEvent::CustomerRegistered { customer_id, .. }
            | CustomerEvent::CustomerImported { customer_id, .. } => {
                if streams.contains_key(customer_id) {
                    bail!("line {n}: customer {customer_id} is registered a second time");
                }
                streams.insert(
                    *customer_id,
                    Stream {
                        customer: Customer::default(),
                        version: 0,
                    },
                );
                order.push(*customer_id);
                current = Some(*customer_id);
                *customer_id
            }
            other => current.with_context(|| {
                format!(
                    "line {n}: {} before any CustomerRegistered or CustomerImported: the file \
                     must hold the customer's whole stream, from its registration or import \
                     (sequence 1)",
                    other.type_name()
                )
            })?,
        };
        let pending = group
            .as_ref()
            .filter(|g| g.customer_id == id)
            .map_or(0, |g| g.events.len() as u64);
        let expected = streams.get(&id).map_or(0, |s| s.version) + pending + 1;
        if let Some(sequence) = parsed.sequence {
            if sequence != expected {
                bail!(
                    "line {n}: sequence {sequence} where {expected} was expected \
                     (a line missing, repeated or out of order?)"
                );
            }
        }
        let same_command = group
            .as_ref()
            .is_some_and(|g| g.customer_id == id && g.metadata == parsed.metadata);
        if !same_command {
            if let Some(done) = group.take() {
                append(store, &mut streams, done).await?;
            }
        }
        let g = group.get_or_insert_with(|| Group {
            customer_id: id,
            metadata: parsed.metadata.clone(),
            first_line: n,
            last_line: n,
            events: Vec::new(),
        });
        g.last_line = n;
        g.events.push(parsed.event);
    }
    if let Some(done) = group.take() {
        append(store, &mut streams, done).await?;
    }
    Ok(order)
}
