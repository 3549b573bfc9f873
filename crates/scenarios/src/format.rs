//! The file format: what a scenario file may say (`tests/scenarios/README.md`
//! describes it for people who do not read Rust).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) notice: Option<String>,
    #[serde(default)]
    pub(crate) now: Option<String>,
    #[serde(default)]
    pub(crate) given: Option<Vec<Value>>,
    pub(crate) when: BTreeMap<String, Value>,
    pub(crate) then: Then,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Then {
    #[serde(default)]
    pub(crate) events: Option<Vec<Value>>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) state: Option<Value>,
}

/// What `then:` asks for, once checked.
pub(crate) enum Expectation<'a> {
    Events {
        events: &'a [Value],
        state: Option<&'a Value>,
    },
    Error {
        code: &'a str,
        message: Option<&'a str>,
    },
}

impl Then {
    pub(crate) fn expectation(&self) -> Result<Expectation<'_>, String> {
        match (&self.events, &self.error) {
            (Some(_), Some(_)) => Err("`then:` has both `events:` and `error:`; a command either \
                 emits events or is refused, so keep only one"
                .into()),
            (None, None) => Err(
                "`then:` needs either `events:` (write `events: []` for \"no \
                 events\") or `error:`"
                    .into(),
            ),
            (Some(events), None) => {
                if self.message.is_some() {
                    return Err("`then.message:` only goes with `then.error:`".into());
                }
                Ok(Expectation::Events {
                    events,
                    state: self.state.as_ref(),
                })
            }
            (None, Some(code)) => {
                if self.state.is_some() {
                    return Err("`then.state:` only goes with `then.events:`".into());
                }
                Ok(Expectation::Error {
                    code,
                    message: self.message.as_deref(),
                })
            }
        }
    }
}
