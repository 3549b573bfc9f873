#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Model-based property test of the Customer aggregate.
//!
//! proptest generates random scripts: a `RegisterCustomer`, then up to 30
//! commands on that one customer, drawn from a small alphabet (a few emails,
//! some differing only in case; a few strong passwords; right and wrong
//! current passwords, confirmations and tokens) with a clock that may jump
//! forward between commands so that links expire.
//!
//! Each command goes to the aggregate (`decide`, then `apply`) and to a small
//! reference model written here from the rules, independently of
//! `aggregate.rs`. After every step:
//! - the aggregate accepted or refused the command as the model expected
//!   (same error code, same event types, same issued tokens);
//! - the aggregate's state equals the model's (through the public getters);
//! - the invariants hold on the aggregate alone (see `invariants`);
//! - replaying every event so far, directly and through JSON, rebuilds an
//!   equal aggregate;
//! - no event, serialized or debug-printed, holds a plain password or token.
//!
//! All secrets here are fake. A failure prints the shrunk script, one
//! command a line, and the first step where aggregate and model part ways.
//! More cases: `PROPTEST_CASES=5000 cargo test -p access-domain --test model`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};

use access_domain::services::fakes::{CountingTokens, FakeHasher, FixedClock};
use access_domain::{
    Credential, Customer, CustomerCommand, CustomerEvent, CustomerId, CustomerServices,
    EmailAddress, LinkLifetimes, Password, PendingEmailChange, Role, Secret, SetupLink,
    TokenDigest, TokenPurpose,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------
// The alphabet
// ---------------------------------------------------------------------------

/// Valid logins; pairs differ only in case (the same login).
const EMAILS: [&str; 5] = [
    "ann@example.com",
    "Ann@Example.COM",
    "bob@example.org",
    "BOB@example.org",
    "carol@example.net",
];

/// Strong passwords. The last one contains the local part of
/// `carol@example.net`, so it is refused as that login's password.
const PASSWORDS: [&str; 4] = [
    "correct-Horse-battery-9",
    "Velvet-Tundra-Orbit-42",
    "Quartz-Mango-Pilot-77",
    "Carol-Sunset-Piano-58",
];

/// A current password that is never right.
const WRONG_PASSWORD: &str = "Not-The-Password-0";

/// A token the fake generator never issues (it starts at `token-1`).
const NEVER_ISSUED_TOKEN: &str = "token-0";

/// The lifetime of both kinds of link, as the rules state it (24 hours).
const LINK_HOURS: i64 = 24;

/// `Password::parse` runs zxcvbn, which is slow: parse each password once.
static PARSED: LazyLock<HashMap<&'static str, Password>> = LazyLock::new(|| {
    PASSWORDS
        .iter()
        .map(|p| {
            let parsed = Password::parse(p, &[])
                .unwrap_or_else(|e| panic!("test password {p:?} is not strong: {e}"));
            (*p, parsed)
        })
        .collect()
});

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn customer_id() -> CustomerId {
    "6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10".parse().unwrap()
}

fn email(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}

fn normalized(raw: &str) -> String {
    raw.trim().to_lowercase()
}

// ---------------------------------------------------------------------------
// Generated commands (symbolic: resolved against the state at run time)
// ---------------------------------------------------------------------------

/// A typed confirmation of a new password.
#[derive(Clone, Copy, Debug)]
enum Confirm {
    /// The same text.
    Same,
    /// The same text in upper case: a mismatch.
    Upper,
}

/// A typed current password.
#[derive(Clone, Copy, Debug)]
enum Current {
    /// The password the customer has (or a valid one if there is none).
    Right,
    /// A password never set.
    Wrong,
    /// The right one in upper case.
    Upper,
}

/// A presented token.
#[derive(Clone, Copy, Debug)]
enum Tok {
    /// The latest token issued for this purpose (any earlier step).
    Latest,
    /// The one issued before the latest, for this purpose.
    Previous,
    /// The latest token issued for the other purpose.
    OtherPurpose,
    /// A token never issued.
    NeverIssued,
}

#[derive(Clone, Copy, Debug)]
enum Cred {
    None,
    Manual {
        password: &'static str,
        confirm: Confirm,
        notify: bool,
    },
    SetupLink,
}

#[derive(Clone, Debug)]
enum Cmd {
    Register {
        email: &'static str,
    },
    ChangeEmail {
        email: &'static str,
        credential: Cred,
    },
    GrantAccess {
        credential: Cred,
    },
    SetPassword {
        password: &'static str,
        confirm: Confirm,
        notify: bool,
    },
    SendAccessNotification,
    RevokeAccess {
        reason: Option<&'static str>,
    },
    RequestEmailChange {
        current: Current,
        new_email: &'static str,
        new_email_confirm: &'static str,
    },
    ConfirmEmailChange {
        token: Tok,
    },
    CompletePasswordSetup {
        token: Tok,
        password: &'static str,
        confirm: Confirm,
    },
    ChangePassword {
        current: Current,
        new_password: &'static str,
        confirm: Confirm,
    },
}

/// One command, after the clock moved on by `hours`.
#[derive(Clone)]
struct Step {
    hours: i64,
    cmd: Cmd,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}h {:?}", self.hours, self.cmd)
    }
}

/// A test case: register with `register`, then run `steps`.
#[derive(Clone)]
struct Script {
    register: &'static str,
    steps: Vec<Step>,
}

impl Script {
    fn all_steps(&self) -> impl Iterator<Item = Step> + '_ {
        let register = Step {
            hours: 0,
            cmd: Cmd::Register {
                email: self.register,
            },
        };
        std::iter::once(register).chain(self.steps.iter().cloned())
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Script [")?;
        for (i, step) in self.all_steps().enumerate() {
            writeln!(f, "  {i:>2}: {step:?}")?;
        }
        write!(f, "]")
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn any_email() -> impl Strategy<Value = &'static str> {
    prop::sample::select(EMAILS.to_vec())
}

fn any_password() -> impl Strategy<Value = &'static str> {
    prop::sample::select(PASSWORDS.to_vec())
}

fn any_confirm() -> impl Strategy<Value = Confirm> {
    prop_oneof![4 => Just(Confirm::Same), 1 => Just(Confirm::Upper)]
}

fn any_current() -> impl Strategy<Value = Current> {
    prop_oneof![
        4 => Just(Current::Right),
        1 => Just(Current::Wrong),
        1 => Just(Current::Upper),
    ]
}

fn any_token() -> impl Strategy<Value = Tok> {
    prop_oneof![
        8 => Just(Tok::Latest),
        1 => Just(Tok::Previous),
        1 => Just(Tok::OtherPurpose),
        1 => Just(Tok::NeverIssued),
    ]
}

fn any_credential() -> impl Strategy<Value = Cred> {
    prop_oneof![
        1 => Just(Cred::None),
        2 => (any_password(), any_confirm(), any::<bool>()).prop_map(
            |(password, confirm, notify)| Cred::Manual { password, confirm, notify }
        ),
        2 => Just(Cred::SetupLink),
    ]
}

fn any_cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        1 => any_email().prop_map(|email| Cmd::Register { email }),
        3 => (any_email(), any_credential())
            .prop_map(|(email, credential)| Cmd::ChangeEmail { email, credential }),
        4 => any_credential().prop_map(|credential| Cmd::GrantAccess { credential }),
        2 => (any_password(), any_confirm(), any::<bool>()).prop_map(
            |(password, confirm, notify)| Cmd::SetPassword { password, confirm, notify }
        ),
        2 => Just(Cmd::SendAccessNotification),
        1 => prop::option::of(prop::sample::select(vec!["left the company", "   "]))
            .prop_map(|reason| Cmd::RevokeAccess { reason }),
        4 => (
            any_current(),
            any_email(),
            prop_oneof![3 => Just(None), 1 => any_email().prop_map(Some)],
        )
            .prop_map(|(current, new_email, confirm)| Cmd::RequestEmailChange {
                current,
                new_email,
                new_email_confirm: confirm.unwrap_or(new_email),
            }),
        6 => any_token().prop_map(|token| Cmd::ConfirmEmailChange { token }),
        3 => (any_token(), any_password(), any_confirm()).prop_map(
            |(token, password, confirm)| Cmd::CompletePasswordSetup { token, password, confirm }
        ),
        2 => (any_current(), any_password(), any_confirm()).prop_map(
            |(current, new_password, confirm)| Cmd::ChangePassword {
                current,
                new_password,
                confirm,
            }
        ),
    ]
}

fn any_hours() -> impl Strategy<Value = i64> {
    prop_oneof![12 => Just(0i64), 3 => 1i64..24, 2 => 24i64..30]
}

fn any_script() -> impl Strategy<Value = Script> {
    let step = (any_hours(), any_cmd()).prop_map(|(hours, cmd)| Step { hours, cmd });
    // Most cases open with a grant, so that the commands needing access get
    // their turn; shrinking may drop it.
    let opening = prop::option::weighted(0.75, any_credential());
    (any_email(), opening, prop::collection::vec(step, 0..=30)).prop_map(
        |(register, opening, steps)| {
            let grant = opening.map(|credential| Step {
                hours: 0,
                cmd: Cmd::GrantAccess { credential },
            });
            Script {
                register,
                steps: grant.into_iter().chain(steps).collect(),
            }
        },
    )
}

// ---------------------------------------------------------------------------
// Concrete inputs (plain text: every secret in this test is fake)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum ActCred {
    None,
    Manual {
        password: &'static str,
        confirm: String,
        notify: bool,
    },
    SetupLink,
}

/// A generated command resolved against the current state: the right
/// password, the latest token, and so on, as plain text.
#[derive(Clone, Debug)]
enum Act {
    Register {
        email: &'static str,
    },
    ChangeEmail {
        email: &'static str,
        credential: ActCred,
    },
    GrantAccess {
        credential: ActCred,
    },
    SetPassword {
        password: &'static str,
        confirm: String,
        notify: bool,
    },
    SendAccessNotification,
    RevokeAccess {
        reason: Option<&'static str>,
    },
    RequestEmailChange {
        current: String,
        new_email: &'static str,
        new_email_confirm: &'static str,
    },
    ConfirmEmailChange {
        token: String,
    },
    CompletePasswordSetup {
        token: String,
        password: &'static str,
        confirm: String,
    },
    ChangePassword {
        current: String,
        new_password: &'static str,
        confirm: String,
    },
}

fn confirmation(password: &str, confirm: Confirm) -> String {
    match confirm {
        Confirm::Same => password.to_string(),
        Confirm::Upper => password.to_uppercase(),
    }
}

/// Tokens issued so far, in order, with their purpose.
type Issued = Vec<(TokenPurpose, String)>;

fn resolve(cmd: &Cmd, model: &Model, issued: &Issued) -> Act {
    let current = |c: Current| {
        let right = model.password.unwrap_or(PASSWORDS[0]);
        match c {
            Current::Right => right.to_string(),
            Current::Wrong => WRONG_PASSWORD.to_string(),
            Current::Upper => right.to_uppercase(),
        }
    };
    let token = |t: Tok, purpose: TokenPurpose| {
        let of = |p: TokenPurpose| issued.iter().filter(move |(q, _)| *q == p);
        let other = match purpose {
            TokenPurpose::PasswordSetup => TokenPurpose::EmailChange,
            TokenPurpose::EmailChange => TokenPurpose::PasswordSetup,
        };
        let found = match t {
            Tok::Latest => of(purpose).next_back(),
            Tok::Previous => of(purpose).rev().nth(1),
            Tok::OtherPurpose => of(other).next_back(),
            Tok::NeverIssued => None,
        };
        found.map_or_else(|| NEVER_ISSUED_TOKEN.to_string(), |(_, t)| t.clone())
    };
    let credential = |c: Cred| match c {
        Cred::None => ActCred::None,
        Cred::Manual {
            password,
            confirm,
            notify,
        } => ActCred::Manual {
            password,
            confirm: confirmation(password, confirm),
            notify,
        },
        Cred::SetupLink => ActCred::SetupLink,
    };
    match *cmd {
        Cmd::Register { email } => Act::Register { email },
        Cmd::ChangeEmail {
            email,
            credential: c,
        } => Act::ChangeEmail {
            email,
            credential: credential(c),
        },
        Cmd::GrantAccess { credential: c } => Act::GrantAccess {
            credential: credential(c),
        },
        Cmd::SetPassword {
            password,
            confirm,
            notify,
        } => Act::SetPassword {
            password,
            confirm: confirmation(password, confirm),
            notify,
        },
        Cmd::SendAccessNotification => Act::SendAccessNotification,
        Cmd::RevokeAccess { reason } => Act::RevokeAccess { reason },
        Cmd::RequestEmailChange {
            current: c,
            new_email,
            new_email_confirm,
        } => Act::RequestEmailChange {
            current: current(c),
            new_email,
            new_email_confirm,
        },
        Cmd::ConfirmEmailChange { token: t } => Act::ConfirmEmailChange {
            token: token(t, TokenPurpose::EmailChange),
        },
        Cmd::CompletePasswordSetup {
            token: t,
            password,
            confirm,
        } => Act::CompletePasswordSetup {
            token: token(t, TokenPurpose::PasswordSetup),
            password,
            confirm: confirmation(password, confirm),
        },
        Cmd::ChangePassword {
            current: c,
            new_password,
            confirm,
        } => Act::ChangePassword {
            current: current(c),
            new_password,
            confirm: confirmation(new_password, confirm),
        },
    }
}

fn parsed(password: &str) -> Password {
    PARSED
        .get(password)
        .cloned()
        .unwrap_or_else(|| panic!("{password:?} is not in the alphabet"))
}

impl ActCred {
    fn credential(&self) -> Credential {
        match self {
            Self::None => Credential::None,
            Self::Manual {
                password,
                confirm,
                notify,
            } => Credential::ManualPassword {
                password: parsed(password),
                password_confirm: Secret::new(confirm.clone()),
                send_notification: *notify,
            },
            Self::SetupLink => Credential::SetupLink,
        }
    }
}

impl Act {
    fn command(&self) -> CustomerCommand {
        match self {
            Self::Register { email: e } => CustomerCommand::RegisterCustomer {
                customer_id: customer_id(),
                email: email(e),
                name: None,
            },
            Self::ChangeEmail {
                email: e,
                credential,
            } => CustomerCommand::ChangeEmail {
                email: email(e),
                credential: credential.credential(),
            },
            Self::GrantAccess { credential } => CustomerCommand::GrantAccess {
                role: Role::CustomerCenter,
                credential: credential.credential(),
            },
            Self::SetPassword {
                password,
                confirm,
                notify,
            } => CustomerCommand::SetPassword {
                password: parsed(password),
                password_confirm: Secret::new(confirm.clone()),
                send_notification: *notify,
            },
            Self::SendAccessNotification => CustomerCommand::SendAccessNotification,
            Self::RevokeAccess { reason } => CustomerCommand::RevokeAccess {
                reason: reason.map(String::from),
            },
            Self::RequestEmailChange {
                current,
                new_email,
                new_email_confirm,
            } => CustomerCommand::RequestEmailChange {
                current_password: Secret::new(current.clone()),
                new_email: email(new_email),
                new_email_confirm: email(new_email_confirm),
            },
            Self::ConfirmEmailChange { token } => CustomerCommand::ConfirmEmailChange {
                token: Secret::new(token.clone()),
            },
            Self::CompletePasswordSetup {
                token,
                password,
                confirm,
            } => CustomerCommand::CompletePasswordSetup {
                token: Secret::new(token.clone()),
                password: parsed(password),
                password_confirm: Secret::new(confirm.clone()),
            },
            Self::ChangePassword {
                current,
                new_password,
                confirm,
            } => CustomerCommand::ChangePassword {
                current_password: Secret::new(current.clone()),
                new_password: parsed(new_password),
                new_password_confirm: Secret::new(confirm.clone()),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// What the rules say a customer is. Plain passwords and tokens (fake) stand
/// for their hashes and digests.
#[derive(Clone, Debug, Default)]
struct Model {
    registered: bool,
    /// The login as typed.
    email: Option<&'static str>,
    access: bool,
    password: Option<&'static str>,
    must_change: bool,
    /// Token and expiry.
    setup_link: Option<(String, DateTime<Utc>)>,
    /// New email, token and expiry.
    pending: Option<(&'static str, String, DateTime<Utc>)>,
    /// Tokens issued by accepted commands (the fake counts from 1).
    tokens_issued: u64,
}

/// A token the model expects a command to issue.
type ExpectedToken = (TokenPurpose, String, String, DateTime<Utc>);

/// The model after an accepted command, with what the command emitted.
#[derive(Debug)]
struct Next {
    model: Model,
    events: Vec<&'static str>,
    tokens: Vec<ExpectedToken>,
}

#[derive(Debug)]
struct Refusal {
    code: &'static str,
    /// Which case of the rule, for the coverage table.
    why: &'static str,
}

fn refuse(code: &'static str) -> Refusal {
    Refusal { code, why: "" }
}

fn refuse_because(code: &'static str, why: &'static str) -> Refusal {
    Refusal { code, why }
}

impl Refusal {
    fn label(&self) -> String {
        if self.why.is_empty() {
            self.code.to_string()
        } else {
            format!("{} ({})", self.code, self.why)
        }
    }
}

/// A new password must match its confirmation and not contain the login
/// email, nor its local part when that has 4 characters or more.
fn check_new_password(password: &str, confirm: &str, login: &str) -> Result<(), Refusal> {
    if password != confirm {
        return Err(refuse("password_mismatch"));
    }
    let lowered = password.to_lowercase();
    let login = normalized(login);
    let local = login.rsplit_once('@').map_or(login.as_str(), |(l, _)| l);
    if lowered.contains(&login) || (local.chars().count() >= 4 && lowered.contains(local)) {
        return Err(refuse_because("weak_password", "contains the login"));
    }
    Ok(())
}

impl Next {
    fn issue(
        &mut self,
        purpose: TokenPurpose,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        self.model.tokens_issued += 1;
        let token = format!("token-{}", self.model.tokens_issued);
        let expires = now + Duration::hours(LINK_HOURS);
        self.tokens
            .push((purpose, recipient.to_string(), token.clone(), expires));
        (token, expires)
    }

    fn send_setup_link(&mut self, login: &str, now: DateTime<Utc>) {
        let link = self.issue(TokenPurpose::PasswordSetup, login, now);
        self.model.setup_link = Some(link);
        self.events.push("AccessNotificationSent");
    }

    fn set_temporary_password(
        &mut self,
        password: &'static str,
        confirm: &str,
        notify: bool,
        login: &str,
    ) -> Result<(), Refusal> {
        check_new_password(password, confirm, login)?;
        self.events.push("PasswordSet");
        self.model.password = Some(password);
        self.model.must_change = true;
        self.model.setup_link = None;
        if notify {
            // A plain notice: no password, no link.
            self.events.push("AccessNotificationSent");
        }
        Ok(())
    }

    /// The notice's rule: a login with access needs a password or a link.
    fn give_credential(
        &mut self,
        credential: &ActCred,
        login: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        match credential {
            ActCred::None => Err(refuse("login_has_no_password")),
            ActCred::Manual {
                password,
                confirm,
                notify,
            } => self.set_temporary_password(password, confirm, *notify, login),
            ActCred::SetupLink => {
                if self.model.password.is_some() {
                    self.events.push("PasswordCleared");
                    self.model.password = None;
                    self.model.must_change = false;
                }
                self.send_setup_link(login, now);
                Ok(())
            }
        }
    }

    fn set_own_password(&mut self, password: &'static str, event: &'static str) {
        self.events.push(event);
        self.model.password = Some(password);
        self.model.must_change = false;
        self.model.setup_link = None;
    }
}

impl Model {
    fn decide(&self, act: &Act, now: DateTime<Utc>) -> Result<Next, Refusal> {
        let mut next = Next {
            model: self.clone(),
            events: Vec::new(),
            tokens: Vec::new(),
        };
        if let Act::Register { email } = act {
            if self.registered {
                return Err(refuse("customer_exists"));
            }
            next.model.registered = true;
            next.model.email = Some(email);
            next.events.push("CustomerRegistered");
            return Ok(next);
        }
        let Some(login) = self.email.filter(|_| self.registered) else {
            return Err(refuse(match act {
                Act::ConfirmEmailChange { .. } | Act::CompletePasswordSetup { .. } => {
                    "invalid_token"
                }
                _ => "customer_not_found",
            }));
        };
        let need_access = || {
            if self.access {
                Ok(())
            } else {
                Err(refuse("no_access"))
            }
        };
        // A login without a password answers like a wrong password.
        let check_current = |current: &str| {
            if self.password.is_some_and(|p| p == current) {
                Ok(())
            } else {
                Err(refuse("wrong_password"))
            }
        };
        match act {
            Act::Register { .. } => unreachable!("handled above"),
            Act::ChangeEmail { email, credential } => {
                if normalized(email) == normalized(login) {
                    return Ok(next); // nothing to do, whatever the credential
                }
                next.events.push("EmailChanged");
                next.model.email = Some(email);
                next.model.pending = None;
                if !self.access {
                    // Without access the email is just data.
                    return match credential {
                        ActCred::None => Ok(next),
                        _ => Err(refuse_because("no_access", "credential without access")),
                    };
                }
                next.give_credential(credential, email, now)?;
            }
            Act::GrantAccess { credential } => {
                if self.access {
                    return Err(refuse("access_already_granted"));
                }
                next.events.push("AccessGranted");
                next.model.access = true;
                next.give_credential(credential, login, now)?;
            }
            Act::SetPassword {
                password,
                confirm,
                notify,
            } => {
                need_access()?;
                next.set_temporary_password(password, confirm, *notify, login)?;
            }
            Act::SendAccessNotification => {
                need_access()?;
                next.send_setup_link(login, now);
            }
            Act::RevokeAccess { .. } => {
                need_access()?;
                next.events.push("AccessRevoked");
                next.model.access = false;
                next.model.password = None;
                next.model.must_change = false;
                next.model.setup_link = None;
                next.model.pending = None;
            }
            Act::RequestEmailChange {
                current,
                new_email,
                new_email_confirm,
            } => {
                need_access()?;
                check_current(current)?;
                if normalized(new_email) != normalized(new_email_confirm) {
                    return Err(refuse("email_mismatch"));
                }
                if normalized(new_email) == normalized(login) {
                    return Err(refuse("email_unchanged"));
                }
                let (token, expires) = next.issue(TokenPurpose::EmailChange, new_email, now);
                next.model.pending = Some((new_email, token, expires));
                next.events.push("EmailChangeRequested");
            }
            Act::ConfirmEmailChange { token } => {
                let Some((new_email, live, expires)) = &self.pending else {
                    return Err(refuse_because("invalid_token", "nothing pending"));
                };
                if live != token {
                    return Err(refuse_because("invalid_token", "not the live token"));
                }
                if *expires <= now {
                    return Err(refuse_because("invalid_token", "expired"));
                }
                next.events.push("EmailChangeConfirmed");
                next.model.email = Some(new_email);
                next.model.pending = None;
            }
            Act::CompletePasswordSetup {
                token,
                password,
                confirm,
            } => {
                let Some((live, expires)) = self.setup_link.as_ref().filter(|_| self.access) else {
                    return Err(refuse_because("invalid_token", "no link"));
                };
                if live != token {
                    return Err(refuse_because("invalid_token", "not the live token"));
                }
                if *expires <= now {
                    return Err(refuse_because("invalid_token", "expired"));
                }
                check_new_password(password, confirm, login)?;
                next.set_own_password(password, "PasswordSetupCompleted");
            }
            Act::ChangePassword {
                current,
                new_password,
                confirm,
            } => {
                need_access()?;
                check_current(current)?;
                check_new_password(new_password, confirm, login)?;
                next.set_own_password(new_password, "PasswordChanged");
            }
        }
        Ok(next)
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The aggregate's state, through its public getters, against the model's.
fn compare(model: &Model, c: &Customer) -> Result<(), String> {
    let mut diffs = Vec::new();
    if c.is_registered() != model.registered {
        diffs.push(format!(
            "registered: model {}, aggregate {}",
            model.registered,
            c.is_registered()
        ));
    }
    let login = c.email().map(EmailAddress::as_str);
    if login != model.email {
        diffs.push(format!(
            "email: model {:?}, aggregate {login:?}",
            model.email
        ));
    }
    let access = model.access.then_some(Role::CustomerCenter);
    if c.access() != access || c.has_access() != model.access {
        diffs.push(format!(
            "access: model {access:?}, aggregate {:?}",
            c.access()
        ));
    }
    let hash = model.password.map(FakeHasher::hash_of);
    if c.password_hash() != hash.as_ref() || c.has_password() != model.password.is_some() {
        diffs.push(format!(
            "password: model {:?}, aggregate has one: {} (matches the model's: {})",
            model.password,
            c.has_password(),
            c.password_hash() == hash.as_ref()
        ));
    }
    if c.must_change_password() != model.must_change {
        diffs.push(format!(
            "must_change_password: model {}, aggregate {}",
            model.must_change,
            c.must_change_password()
        ));
    }
    let link = model
        .setup_link
        .as_ref()
        .map(|(token, expires_at)| SetupLink {
            token_digest: TokenDigest::of(token),
            expires_at: *expires_at,
        });
    if c.setup_link() != link.as_ref() {
        diffs.push(format!(
            "setup link: model {:?}, aggregate {:?}",
            model.setup_link,
            c.setup_link()
        ));
    }
    let pending = model
        .pending
        .as_ref()
        .map(|(new_email, token, expires_at)| PendingEmailChange {
            new_email: email(new_email),
            token_digest: TokenDigest::of(token),
            expires_at: *expires_at,
        });
    let pending_spelling = c.pending_email_change().map(|p| p.new_email.as_str());
    if c.pending_email_change() != pending.as_ref()
        || pending_spelling != model.pending.as_ref().map(|p| p.0)
    {
        diffs.push(format!(
            "pending email change: model {:?}, aggregate {:?}",
            model.pending,
            c.pending_email_change()
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the aggregate's state differs from the model's: {}",
            diffs.join("; ")
        ))
    }
}

/// The invariants, on the aggregate alone.
fn invariants(c: &Customer) -> Result<(), String> {
    // Access implies a way in: a password, or a setup link that was live
    // when the latest event happened (the command that granted access,
    // changed the login or voided the password issued it). Time may have
    // moved on since, so the link may have expired by now.
    if c.has_access() && !c.has_password() {
        let Some(link) = c.setup_link() else {
            return Err("access without a password or a setup link".into());
        };
        let last = c.updated_at().ok_or("access but no event time")?;
        if link.expires_at <= last {
            return Err(format!(
                "access without a password, and the setup link (expiring {}) was already dead \
                 when the latest event happened ({last})",
                link.expires_at
            ));
        }
    }
    // At most one pending change (one field), never to the current login,
    // and only for a login that has a password (it was asked with it).
    if let Some(pending) = c.pending_email_change() {
        if Some(&pending.new_email) == c.email() {
            return Err(format!(
                "a pending change to the current login {}",
                pending.new_email
            ));
        }
        if !c.has_password() {
            return Err("a pending email change on a login without a password".into());
        }
    }
    // No access: nothing to log in with.
    if !c.has_access()
        && (c.has_password()
            || c.must_change_password()
            || c.setup_link().is_some()
            || c.pending_email_change().is_some())
    {
        return Err(format!(
            "no access, yet password: {}, must change: {}, setup link: {}, pending change: {}",
            c.has_password(),
            c.must_change_password(),
            c.setup_link().is_some(),
            c.pending_email_change().is_some()
        ));
    }
    if c.must_change_password() && !c.has_password() {
        return Err("must change a password it does not have".into());
    }
    Ok(())
}

/// Replaying the history, directly and as stored (JSON), rebuilds the same
/// aggregate; so does a JSON snapshot.
fn replay(history: &[CustomerEvent], c: &Customer) -> Result<(), String> {
    let mut direct = Customer::default();
    for event in history {
        direct.apply(event.clone());
    }
    if direct != *c {
        return Err(format!(
            "replaying the events gives {direct:?}, the aggregate is {c:?}"
        ));
    }
    let mut stored = Customer::default();
    for event in history {
        let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
        let back: CustomerEvent =
            serde_json::from_str(&json).map_err(|e| format!("{json}: {e}"))?;
        stored.apply(back);
    }
    let spelling = |c: &Customer| c.email().map(|e| e.as_str().to_string());
    if stored != *c || spelling(&stored) != spelling(c) {
        return Err(format!(
            "replaying the events from JSON gives {stored:?}, the aggregate is {c:?}"
        ));
    }
    let snapshot = serde_json::to_string(c).map_err(|e| e.to_string())?;
    let back: Customer = serde_json::from_str(&snapshot).map_err(|e| e.to_string())?;
    if back != *c {
        return Err(format!("the JSON snapshot {snapshot} does not round-trip"));
    }
    Ok(())
}

/// No event holds a plain password or token, in JSON or in debug output.
fn no_secrets(events: &[CustomerEvent], issued: &Issued) -> Result<(), String> {
    let passwords = PASSWORDS.iter().copied().chain([WRONG_PASSWORD]);
    let mut secrets: Vec<String> = passwords.map(str::to_lowercase).collect();
    secrets.extend(issued.iter().map(|(_, t)| t.to_lowercase()));
    secrets.push("token-".into());
    for event in events {
        let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
        let debug = format!("{event:?}");
        for text in [json.to_lowercase(), debug.to_lowercase()] {
            if let Some(secret) = secrets.iter().find(|s| text.contains(s.as_str())) {
                return Err(format!("the event {json} contains the secret {secret:?}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running a script
// ---------------------------------------------------------------------------

/// Runs a script; returns, per step, the command name and its outcome.
async fn run(script: &Script) -> Result<Vec<(&'static str, String)>, String> {
    let tokens = Arc::new(CountingTokens::default());
    let mut now = start();
    let mut customer = Customer::default();
    let mut model = Model::default();
    let mut history: Vec<CustomerEvent> = Vec::new();
    let mut issued: Issued = Vec::new();
    let mut outcomes = Vec::new();

    for (i, step) in script.all_steps().enumerate() {
        now += Duration::hours(step.hours);
        let services = CustomerServices::new(
            Arc::new(FakeHasher),
            tokens.clone(),
            Arc::new(FixedClock(now)),
            LinkLifetimes::default(),
        );
        let act = resolve(&step.cmd, &model, &issued);
        let expected = model.decide(&act, now);
        let command = act.command();
        let name = command.name();
        let (actual, taken) = match customer.decide(command, &services).await {
            Ok(decision) => (Ok(decision.events), decision.issued),
            Err(e) => (Err(e), Vec::new()),
        };
        let at = format!("step {i} `{step:?}`, resolved as {act:?}, at {now}");

        let outcome = match (expected, actual) {
            (Ok(next), Ok(events)) => {
                let names: Vec<&str> = events.iter().map(CustomerEvent::type_name).collect();
                if names != next.events {
                    return Err(format!(
                        "{at}: the model expected the events {:?}, the aggregate emitted {names:?}",
                        next.events
                    ));
                }
                if let Some(e) = events.iter().find(|e| e.at() != now) {
                    return Err(format!("{at}: the event {e:?} is not dated now"));
                }
                let got: Vec<ExpectedToken> = taken
                    .iter()
                    .map(|t| {
                        let plain = t.token.expose().to_string();
                        (t.purpose, t.recipient.as_str().into(), plain, t.expires_at)
                    })
                    .collect();
                if got != next.tokens {
                    return Err(format!(
                        "{at}: the model expected the tokens {:?}, the aggregate issued {got:?}",
                        next.tokens
                    ));
                }
                if let Some(t) = taken
                    .iter()
                    .find(|t| t.digest != TokenDigest::of(t.token.expose()))
                {
                    return Err(format!(
                        "{at}: the digest of {:?} is wrong",
                        t.token.expose()
                    ));
                }
                issued.extend(
                    got.into_iter()
                        .map(|(purpose, _, token, _)| (purpose, token)),
                );
                no_secrets(&events, &issued).map_err(|e| format!("{at}: {e}"))?;
                for event in &events {
                    customer.apply(event.clone());
                }
                if !events.is_empty()
                    && customer.has_access()
                    && !customer.can_log_in_or_set_up(now)
                {
                    return Err(format!(
                        "{at}: the command left a customer with access and no way to log in"
                    ));
                }
                history.extend(events);
                model = next.model;
                if names.is_empty() {
                    "ok: no events".to_string()
                } else {
                    format!("ok: {}", names.join(" + "))
                }
            }
            (Err(refusal), Err(error)) => {
                if error.code() != refusal.code {
                    return Err(format!(
                        "{at}: the model expected a refusal with {}, the aggregate refused with {} ({error})",
                        refusal.code,
                        error.code()
                    ));
                }
                if !taken.is_empty() {
                    return Err(format!("{at}: a refused command issued {taken:?}"));
                }
                refusal.label()
            }
            (Ok(next), Err(error)) => {
                return Err(format!(
                    "{at}: the model expected the events {:?}, the aggregate refused with {} ({error})",
                    next.events,
                    error.code()
                ));
            }
            (Err(refusal), Ok(events)) => {
                let names: Vec<&str> = events.iter().map(CustomerEvent::type_name).collect();
                return Err(format!(
                    "{at}: the model expected a refusal with {}, the aggregate emitted {names:?}",
                    refusal.label()
                ));
            }
        };
        outcomes.push((name, outcome));

        compare(&model, &customer).map_err(|e| format!("{at}: {e}"))?;
        invariants(&customer).map_err(|e| format!("{at}: invariant broken: {e}"))?;
        replay(&history, &customer).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(outcomes)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// 256 cases unless `PROPTEST_CASES` says otherwise. Failures are not
/// persisted to files: copy a shrunk script into a regression test instead.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_aggregate_follows_the_model_and_keeps_its_invariants(script in any_script()) {
        runtime().block_on(run(&script)).map_err(TestCaseError::fail)?;
    }
}

/// The generator must keep reaching the interesting cases: if a change to
/// the alphabet or the weights stopped producing, say, an accepted email
/// confirmation, the property above would pass without testing it.
#[test]
fn the_generated_scripts_reach_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = any_script();
    let rt = runtime();
    let mut seen: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for _ in 0..200 {
        let script = strategy.new_tree(&mut runner).unwrap().current();
        let outcomes = rt
            .block_on(run(&script))
            .unwrap_or_else(|e| panic!("{script:?}\n{e}"));
        for outcome in outcomes {
            *seen.entry(outcome).or_default() += 1;
        }
    }
    for ((name, outcome), n) in &seen {
        println!("{n:>5}  {name}: {outcome}");
    }
    let required = [
        ("register_customer", "customer_exists"),
        ("change_email", "ok: no events"),
        ("change_email", "ok: EmailChanged"),
        (
            "change_email",
            "ok: EmailChanged + PasswordCleared + AccessNotificationSent",
        ),
        ("change_email", "ok: EmailChanged + PasswordSet"),
        ("change_email", "login_has_no_password"),
        ("change_email", "no_access (credential without access)"),
        ("change_email", "weak_password (contains the login)"),
        ("grant_access", "ok: AccessGranted + AccessNotificationSent"),
        (
            "grant_access",
            "ok: AccessGranted + PasswordSet + AccessNotificationSent",
        ),
        ("grant_access", "login_has_no_password"),
        ("grant_access", "access_already_granted"),
        ("grant_access", "password_mismatch"),
        ("set_password", "ok: PasswordSet"),
        ("set_password", "no_access"),
        ("send_access_notification", "ok: AccessNotificationSent"),
        ("send_access_notification", "no_access"),
        ("revoke_access", "ok: AccessRevoked"),
        ("revoke_access", "no_access"),
        ("request_email_change", "ok: EmailChangeRequested"),
        ("request_email_change", "wrong_password"),
        ("request_email_change", "email_mismatch"),
        ("request_email_change", "email_unchanged"),
        ("request_email_change", "no_access"),
        ("confirm_email_change", "ok: EmailChangeConfirmed"),
        ("confirm_email_change", "invalid_token (expired)"),
        ("confirm_email_change", "invalid_token (not the live token)"),
        ("confirm_email_change", "invalid_token (nothing pending)"),
        ("complete_password_setup", "ok: PasswordSetupCompleted"),
        ("complete_password_setup", "invalid_token (expired)"),
        (
            "complete_password_setup",
            "invalid_token (not the live token)",
        ),
        ("complete_password_setup", "invalid_token (no link)"),
        ("complete_password_setup", "password_mismatch"),
        ("change_password", "ok: PasswordChanged"),
        ("change_password", "wrong_password"),
        ("change_password", "password_mismatch"),
    ];
    let missing: Vec<_> = required
        .iter()
        .filter(|(name, outcome)| !seen.contains_key(&(*name, outcome.to_string())))
        .collect();
    assert!(
        missing.is_empty(),
        "200 generated scripts never reached {missing:?}"
    );
}
