//! Given/when/then tests, one per rule, named after the rule.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::services::fakes::services_at;

type Framework = TestFramework<Customer>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn earlier() -> DateTime<Utc> {
    now() - Duration::hours(1)
}

fn framework() -> Framework {
    Framework::with(services_at(now()))
}

fn id() -> CustomerId {
    "6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10".parse().unwrap()
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

const OLD: &str = "ann@example.com";
const NEW: &str = "ann.new@example.org";
const PW: &str = "correct-Horse-battery-9";
const PW2: &str = "Velvet-Tundra-Orbit-42";

fn password(s: &str) -> Password {
    Password::parse(s, &[]).unwrap()
}

fn manual(send_notification: bool) -> Credential {
    Credential::ManualPassword {
        password: password(PW),
        password_confirm: Secret::new(PW),
        send_notification,
    }
}

fn fake_hash(p: &str) -> PasswordHash {
    crate::services::fakes::FakeHasher::hash_of(p)
}

fn registered() -> CustomerEvent {
    CustomerEvent::CustomerRegistered {
        customer_id: id(),
        email: Personal::Known(email(OLD)),
        name: Some(Personal::Known(CustomerName::parse("Ann Smith").unwrap())),
        at: earlier(),
    }
}

fn granted() -> CustomerEvent {
    CustomerEvent::AccessGranted {
        role: Role::CustomerCenter,
        at: earlier(),
    }
}

fn password_set(p: &str, temporary: bool) -> CustomerEvent {
    CustomerEvent::PasswordSet {
        password_hash: fake_hash(p),
        temporary,
        at: earlier(),
    }
}

fn setup_link_sent(token: &str, expires_at: DateTime<Utc>) -> CustomerEvent {
    CustomerEvent::AccessNotificationSent {
        recipient: Personal::Known(email(OLD)),
        setup_link: Some(SetupLink {
            token_digest: TokenDigest::of(token),
            expires_at,
        }),
        at: earlier(),
    }
}

/// A customer with access and a permanent password.
fn with_access() -> Vec<CustomerEvent> {
    vec![
        registered(),
        granted(),
        password_set(PW, true),
        CustomerEvent::PasswordChanged {
            password_hash: fake_hash(PW),
            at: earlier(),
        },
    ]
}

fn email_change_requested(token: &str, expires_at: DateTime<Utc>) -> CustomerEvent {
    CustomerEvent::EmailChangeRequested {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email(NEW)),
        token_digest: TokenDigest::of(token),
        expires_at,
        at: earlier(),
    }
}

fn link_24h() -> SetupLink {
    SetupLink {
        token_digest: TokenDigest::of("token-1"),
        expires_at: now() + Duration::hours(24),
    }
}

fn state(events: Vec<CustomerEvent>) -> Customer {
    let mut c = Customer::default();
    for e in events {
        c.apply(e);
    }
    c
}

// ---------------------------------------------------------------------------
// 1. RegisterCustomer
// ---------------------------------------------------------------------------

#[test]
fn register_creates_a_customer_without_access() {
    framework()
        .given_no_previous_events()
        .when(CustomerCommand::RegisterCustomer {
            customer_id: id(),
            email: email(OLD),
            name: None,
        })
        .then_expect_events(vec![CustomerEvent::CustomerRegistered {
            customer_id: id(),
            email: Personal::Known(email(OLD)),
            name: None,
            at: now(),
        }]);
    let c = state(vec![registered()]);
    assert!(!c.has_access() && !c.has_password());
}

#[test]
fn second_registration_of_the_same_id_is_refused() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::RegisterCustomer {
            customer_id: id(),
            email: email(NEW),
            name: None,
        })
        .then_expect_error(CustomerError::CustomerExists);
}

#[test]
fn commands_on_an_unregistered_customer_are_customer_not_found() {
    framework()
        .given_no_previous_events()
        .when(CustomerCommand::SendAccessNotification)
        .then_expect_error(CustomerError::CustomerNotFound);
}

// ---------------------------------------------------------------------------
// 2. ChangeEmail
// ---------------------------------------------------------------------------

#[test]
fn change_email_without_access_needs_no_credential() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::None,
        })
        .then_expect_events(vec![CustomerEvent::EmailChanged {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        }]);
}

#[test]
fn change_email_without_access_refuses_a_credential_it_cannot_use() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::SetupLink,
        })
        .then_expect_error(CustomerError::NoAccess);
}

#[test]
fn change_email_with_access_and_no_credential_is_refused_with_the_notice_message() {
    let result = framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::None,
        })
        .inspect_result();
    let err = result.unwrap_err();
    assert_eq!(err.code(), "login_has_no_password");
    assert_eq!(
        err.to_string(),
        "ann.new@example.org login has no password. A notification email with a password URL must be sent or a new password must be entered manually."
    );
}

#[test]
fn change_email_with_access_and_manual_password_sets_a_temporary_password() {
    framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: manual(false),
        })
        .then_expect_events(vec![
            CustomerEvent::EmailChanged {
                old_email: Personal::Known(email(OLD)),
                new_email: Personal::Known(email(NEW)),
                at: now(),
            },
            CustomerEvent::PasswordSet {
                password_hash: fake_hash(PW),
                temporary: true,
                at: now(),
            },
        ]);
}

#[test]
fn change_email_with_manual_password_and_notification_notifies_the_new_address_without_the_password(
) {
    let events = framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: manual(true),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events.last(),
        Some(&CustomerEvent::AccessNotificationSent {
            recipient: Personal::Known(email(NEW)),
            setup_link: None,
            at: now(),
        })
    );
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(PW), "plain password in {json}");
}

#[test]
fn change_email_with_access_and_setup_link_voids_the_old_password_and_sends_a_link_to_the_new_address(
) {
    framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::SetupLink,
        })
        .then_expect_events(vec![
            CustomerEvent::EmailChanged {
                old_email: Personal::Known(email(OLD)),
                new_email: Personal::Known(email(NEW)),
                at: now(),
            },
            CustomerEvent::PasswordCleared {
                reason: PasswordClearedReason::EmailChangedWithSetupLink,
                at: now(),
            },
            CustomerEvent::AccessNotificationSent {
                recipient: Personal::Known(email(NEW)),
                setup_link: Some(link_24h()),
                at: now(),
            },
        ]);
}

#[tokio::test]
async fn the_old_password_stops_working_after_an_email_change_with_setup_link() {
    let services = services_at(now());
    let mut c = state(with_access());
    let decision = c
        .decide(
            CustomerCommand::ChangeEmail {
                email: email(NEW),
                credential: Credential::SetupLink,
            },
            &services,
        )
        .await
        .unwrap();
    for e in decision.events {
        c.apply(e);
    }
    let err = c
        .decide(
            CustomerCommand::ChangePassword {
                current_password: Secret::new(PW),
                new_password: password(PW2),
                new_password_confirm: Secret::new(PW2),
            },
            &services,
        )
        .await
        .unwrap_err();
    assert_eq!(err, CustomerError::WrongPassword);
    let issued = decision.issued;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].recipient, email(NEW));
    assert_eq!(issued[0].purpose, TokenPurpose::PasswordSetup);
}

#[test]
fn change_email_with_mismatched_password_confirmation_is_password_mismatch() {
    framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::ManualPassword {
                password: password(PW),
                password_confirm: Secret::new(PW2),
                send_notification: false,
            },
        })
        .then_expect_error(CustomerError::PasswordMismatch);
}

#[test]
fn change_email_to_the_same_address_emits_nothing() {
    framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email("ANN@example.com"),
            credential: Credential::None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_manual_password_containing_the_new_login_email_is_weak() {
    let err = framework()
        .given(with_access())
        .when(CustomerCommand::ChangeEmail {
            email: email("zanzibar@example.org"),
            credential: Credential::ManualPassword {
                password: password("Zanzibar-Quartz-Lamp-7"),
                password_confirm: Secret::new("Zanzibar-Quartz-Lamp-7"),
                send_notification: false,
            },
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "weak_password");
}

// ---------------------------------------------------------------------------
// 3. GrantAccess
// ---------------------------------------------------------------------------

#[test]
fn grant_access_without_password_or_notification_is_refused_with_the_notice_message() {
    let err = framework()
        .given(vec![registered()])
        .when(CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::None,
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "login_has_no_password");
    assert_eq!(
        err.to_string(),
        "ann@example.com login has no password. A notification email with a password URL must be sent or a new password must be entered manually."
    );
}

#[test]
fn grant_access_with_setup_link_sends_the_access_notification() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        })
        .then_expect_events(vec![
            CustomerEvent::AccessGranted {
                role: Role::CustomerCenter,
                at: now(),
            },
            CustomerEvent::AccessNotificationSent {
                recipient: Personal::Known(email(OLD)),
                setup_link: Some(link_24h()),
                at: now(),
            },
        ]);
}

#[test]
fn grant_access_with_manual_password_sets_a_temporary_password() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: manual(true),
        })
        .then_expect_events(vec![
            CustomerEvent::AccessGranted {
                role: Role::CustomerCenter,
                at: now(),
            },
            CustomerEvent::PasswordSet {
                password_hash: fake_hash(PW),
                temporary: true,
                at: now(),
            },
            CustomerEvent::AccessNotificationSent {
                recipient: Personal::Known(email(OLD)),
                setup_link: None,
                at: now(),
            },
        ]);
}

#[test]
fn grant_access_twice_is_access_already_granted() {
    framework()
        .given(with_access())
        .when(CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        })
        .then_expect_error(CustomerError::AccessAlreadyGranted);
}

// ---------------------------------------------------------------------------
// 4. SetPassword
// ---------------------------------------------------------------------------

#[test]
fn set_password_needs_access() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::SetPassword {
            password: password(PW),
            password_confirm: Secret::new(PW),
            send_notification: false,
        })
        .then_expect_error(CustomerError::NoAccess);
}

#[test]
fn an_administrators_password_is_temporary() {
    framework()
        .given(with_access())
        .when(CustomerCommand::SetPassword {
            password: password(PW2),
            password_confirm: Secret::new(PW2),
            send_notification: false,
        })
        .then_expect_events(vec![CustomerEvent::PasswordSet {
            password_hash: fake_hash(PW2),
            temporary: true,
            at: now(),
        }]);
    let mut c = state(with_access());
    assert!(!c.must_change_password());
    c.apply(password_set(PW2, true));
    assert!(c.must_change_password());
}

#[test]
fn set_password_with_mismatched_confirmation_is_password_mismatch() {
    framework()
        .given(with_access())
        .when(CustomerCommand::SetPassword {
            password: password(PW2),
            password_confirm: Secret::new(PW),
            send_notification: true,
        })
        .then_expect_error(CustomerError::PasswordMismatch);
}

// ---------------------------------------------------------------------------
// 5. SendAccessNotification
// ---------------------------------------------------------------------------

#[test]
fn send_access_notification_needs_access() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::SendAccessNotification)
        .then_expect_error(CustomerError::NoAccess);
}

#[test]
fn send_access_notification_issues_a_24_hour_link_naming_the_login_email() {
    framework()
        .given(with_access())
        .when(CustomerCommand::SendAccessNotification)
        .then_expect_events(vec![CustomerEvent::AccessNotificationSent {
            recipient: Personal::Known(email(OLD)),
            setup_link: Some(link_24h()),
            at: now(),
        }]);
}

#[test]
fn a_new_setup_link_voids_every_earlier_one() {
    let mut given = with_access();
    given.push(setup_link_sent("old-token", now() + Duration::hours(5)));
    given.push(setup_link_sent("newer-token", now() + Duration::hours(6)));
    // The older link no longer works…
    framework()
        .given(given.clone())
        .when(CustomerCommand::CompletePasswordSetup {
            token: Secret::new("old-token"),
            password: password(PW2),
            password_confirm: Secret::new(PW2),
        })
        .then_expect_error(CustomerError::InvalidToken);
    // …the newest does.
    framework()
        .given(given)
        .when(CustomerCommand::CompletePasswordSetup {
            token: Secret::new("newer-token"),
            password: password(PW2),
            password_confirm: Secret::new(PW2),
        })
        .then_expect_events(vec![CustomerEvent::PasswordSetupCompleted {
            password_hash: fake_hash(PW2),
            at: now(),
        }]);
}

#[tokio::test]
async fn the_setup_link_lifetime_is_configurable() {
    use crate::services::fakes::{CountingTokens, FakeHasher, FixedClock};
    use crate::services::LinkLifetimes;
    use std::sync::Arc;
    let services = CustomerServices::new(
        Arc::new(FakeHasher),
        Arc::new(CountingTokens::default()),
        Arc::new(FixedClock(now())),
        LinkLifetimes {
            setup_link: Duration::hours(2),
            email_change: Duration::hours(24),
        },
    );
    let events = state(with_access())
        .decide(CustomerCommand::SendAccessNotification, &services)
        .await
        .unwrap()
        .events;
    match &events[0] {
        CustomerEvent::AccessNotificationSent {
            setup_link: Some(link),
            ..
        } => assert_eq!(link.expires_at, now() + Duration::hours(2)),
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 6. RevokeAccess
// ---------------------------------------------------------------------------

#[test]
fn revoke_access_needs_access() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::RevokeAccess { reason: None })
        .then_expect_error(CustomerError::NoAccess);
}

#[test]
fn revoke_access_discards_password_links_and_pending_change() {
    let mut given = with_access();
    given.push(setup_link_sent("t", now() + Duration::hours(3)));
    given.push(email_change_requested("e", now() + Duration::hours(3)));
    framework()
        .given(given.clone())
        .when(CustomerCommand::RevokeAccess {
            reason: Some("  contract ended ".into()),
        })
        .then_expect_events(vec![CustomerEvent::AccessRevoked {
            reason: Some("contract ended".into()),
            at: now(),
        }]);
    given.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: now(),
    });
    let c = state(given.clone());
    assert!(!c.has_access() && !c.has_password());
    assert!(c.setup_link().is_none() && c.pending_email_change().is_none());
    framework()
        .given(given)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("e"),
        })
        .then_expect_error(CustomerError::InvalidToken);
}

#[test]
fn after_revoke_change_email_needs_no_credential() {
    let mut given = with_access();
    given.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: earlier(),
    });
    framework()
        .given(given)
        .when(CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::None,
        })
        .then_expect_events(vec![CustomerEvent::EmailChanged {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        }]);
}

#[test]
fn after_revoke_a_new_grant_again_needs_a_password_or_notification() {
    let mut given = with_access();
    given.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: earlier(),
    });
    let err = framework()
        .given(given)
        .when(CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::None,
        })
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "login_has_no_password");
}

// ---------------------------------------------------------------------------
// 7. Self-service: RequestEmailChange
// ---------------------------------------------------------------------------

fn request_change(current: &str, new: &str, confirm: &str) -> CustomerCommand {
    CustomerCommand::RequestEmailChange {
        current_password: Secret::new(current),
        new_email: email(new),
        new_email_confirm: email(confirm),
    }
}

#[test]
fn request_email_change_needs_access() {
    framework()
        .given(vec![registered()])
        .when(request_change(PW, NEW, NEW))
        .then_expect_error(CustomerError::NoAccess);
}

#[test]
fn request_email_change_needs_the_right_current_password() {
    framework()
        .given(with_access())
        .when(request_change(PW2, NEW, NEW))
        .then_expect_error(CustomerError::WrongPassword);
}

#[test]
fn request_email_change_needs_matching_addresses() {
    framework()
        .given(with_access())
        .when(request_change(PW, NEW, "other@example.org"))
        .then_expect_error(CustomerError::EmailMismatch);
}

#[test]
fn request_email_change_needs_a_different_address() {
    framework()
        .given(with_access())
        .when(request_change(PW, "Ann@Example.com", "ann@example.com"))
        .then_expect_error(CustomerError::EmailUnchanged);
}

#[test]
fn request_email_change_records_a_pending_change_and_keeps_the_old_login() {
    framework()
        .given(with_access())
        .when(request_change(PW, NEW, NEW))
        .then_expect_events(vec![CustomerEvent::EmailChangeRequested {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            token_digest: TokenDigest::of("token-1"),
            expires_at: now() + Duration::hours(24),
            at: now(),
        }]);
    let mut given = with_access();
    given.push(email_change_requested("x", now() + Duration::hours(1)));
    let c = state(given);
    assert_eq!(c.email(), Some(&email(OLD)));
    assert_eq!(
        c.pending_email_change().map(|p| &p.new_email),
        Some(&email(NEW))
    );
}

#[test]
fn a_newer_email_change_request_replaces_an_older_one() {
    let mut given = with_access();
    given.push(email_change_requested("first", now() + Duration::hours(5)));
    given.push(CustomerEvent::EmailChangeRequested {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email("third@example.net")),
        token_digest: TokenDigest::of("second"),
        expires_at: now() + Duration::hours(5),
        at: earlier(),
    });
    framework()
        .given(given.clone())
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("first"),
        })
        .then_expect_error(CustomerError::InvalidToken);
    framework()
        .given(given)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("second"),
        })
        .then_expect_events(vec![CustomerEvent::EmailChangeConfirmed {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email("third@example.net")),
            at: now(),
        }]);
}

// ---------------------------------------------------------------------------
// 7. Self-service: ConfirmEmailChange
// ---------------------------------------------------------------------------

#[test]
fn confirm_email_change_with_a_valid_token_switches_the_login() {
    let mut given = with_access();
    given.push(email_change_requested("tok", now() + Duration::hours(1)));
    framework()
        .given(given.clone())
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("tok"),
        })
        .then_expect_events(vec![CustomerEvent::EmailChangeConfirmed {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        }]);
    given.push(CustomerEvent::EmailChangeConfirmed {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email(NEW)),
        at: now(),
    });
    assert_eq!(state(given).email(), Some(&email(NEW)));
}

#[test]
fn confirm_email_change_with_a_wrong_expired_or_used_token_is_invalid_token() {
    let mut given = with_access();
    given.push(email_change_requested("tok", now() + Duration::hours(1)));
    // wrong
    framework()
        .given(given.clone())
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("nope"),
        })
        .then_expect_error(CustomerError::InvalidToken);
    // expired
    let mut expired = with_access();
    expired.push(email_change_requested("tok", now()));
    framework()
        .given(expired)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("tok"),
        })
        .then_expect_error(CustomerError::InvalidToken);
    // used
    given.push(CustomerEvent::EmailChangeConfirmed {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email(NEW)),
        at: earlier(),
    });
    framework()
        .given(given)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("tok"),
        })
        .then_expect_error(CustomerError::InvalidToken);
}

#[test]
fn an_administrators_email_change_voids_a_pending_self_service_change() {
    let mut given = with_access();
    given.push(email_change_requested("tok", now() + Duration::hours(1)));
    given.push(CustomerEvent::EmailChanged {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email("admin-set@example.com")),
        at: earlier(),
    });
    framework()
        .given(given)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("tok"),
        })
        .then_expect_error(CustomerError::InvalidToken);
}

// ---------------------------------------------------------------------------
// 7. Self-service: CompletePasswordSetup
// ---------------------------------------------------------------------------

fn setup(token: &str, p: &str, confirm: &str) -> CustomerCommand {
    CustomerCommand::CompletePasswordSetup {
        token: Secret::new(token),
        password: password(p),
        password_confirm: Secret::new(confirm),
    }
}

fn granted_with_link(expires_at: DateTime<Utc>) -> Vec<CustomerEvent> {
    vec![registered(), granted(), setup_link_sent("link", expires_at)]
}

#[test]
fn complete_password_setup_sets_a_permanent_password_and_uses_the_link_up() {
    let given = granted_with_link(now() + Duration::hours(1));
    framework()
        .given(given.clone())
        .when(setup("link", PW, PW))
        .then_expect_events(vec![CustomerEvent::PasswordSetupCompleted {
            password_hash: fake_hash(PW),
            at: now(),
        }]);
    let mut used = given;
    used.push(CustomerEvent::PasswordSetupCompleted {
        password_hash: fake_hash(PW),
        at: earlier(),
    });
    let c = state(used.clone());
    assert!(c.has_password() && !c.must_change_password());
    framework()
        .given(used)
        .when(setup("link", PW2, PW2))
        .then_expect_error(CustomerError::InvalidToken);
}

#[test]
fn complete_password_setup_with_an_expired_or_wrong_link_is_invalid_token() {
    framework()
        .given(granted_with_link(now()))
        .when(setup("link", PW, PW))
        .then_expect_error(CustomerError::InvalidToken);
    framework()
        .given(granted_with_link(now() + Duration::hours(1)))
        .when(setup("other", PW, PW))
        .then_expect_error(CustomerError::InvalidToken);
}

#[test]
fn complete_password_setup_with_mismatched_confirmation_is_password_mismatch() {
    framework()
        .given(granted_with_link(now() + Duration::hours(1)))
        .when(setup("link", PW, PW2))
        .then_expect_error(CustomerError::PasswordMismatch);
}

// ---------------------------------------------------------------------------
// 7. Self-service: ChangePassword
// ---------------------------------------------------------------------------

fn change_password(current: &str, new: &str, confirm: &str) -> CustomerCommand {
    CustomerCommand::ChangePassword {
        current_password: Secret::new(current),
        new_password: password(new),
        new_password_confirm: Secret::new(confirm),
    }
}

#[test]
fn change_password_clears_the_temporary_flag() {
    let given = vec![registered(), granted(), password_set(PW, true)];
    assert!(state(given.clone()).must_change_password());
    framework()
        .given(given.clone())
        .when(change_password(PW, PW2, PW2))
        .then_expect_events(vec![CustomerEvent::PasswordChanged {
            password_hash: fake_hash(PW2),
            at: now(),
        }]);
    let mut after = given;
    after.push(CustomerEvent::PasswordChanged {
        password_hash: fake_hash(PW2),
        at: now(),
    });
    assert!(!state(after).must_change_password());
}

#[test]
fn change_password_needs_the_right_current_password() {
    framework()
        .given(with_access())
        .when(change_password(PW2, PW2, PW2))
        .then_expect_error(CustomerError::WrongPassword);
}

#[test]
fn change_password_with_mismatched_confirmation_is_password_mismatch() {
    framework()
        .given(with_access())
        .when(change_password(PW, PW2, PW))
        .then_expect_error(CustomerError::PasswordMismatch);
}

// ---------------------------------------------------------------------------
// 8. UpgradePasswordHash (at a successful login)
// ---------------------------------------------------------------------------

fn upgrade(p: &str) -> CustomerCommand {
    CustomerCommand::UpgradePasswordHash {
        password: Secret::new(p),
    }
}

/// A customer whose permanent password was hashed with older parameters.
fn with_old_hash() -> Vec<CustomerEvent> {
    vec![
        registered(),
        granted(),
        CustomerEvent::PasswordChanged {
            password_hash: crate::services::fakes::FakeHasher::old_hash_of(PW),
            at: earlier(),
        },
    ]
}

#[test]
fn a_hash_made_with_older_parameters_is_replaced_by_one_with_the_current_ones() {
    framework()
        .given(with_old_hash())
        .when(upgrade(PW))
        .then_expect_events(vec![CustomerEvent::PasswordRehashed {
            password_hash: fake_hash(PW),
            at: now(),
        }]);
}

#[test]
fn a_rehash_keeps_the_login_its_sessions_and_its_flags() {
    let before = state(vec![registered(), granted(), password_set(PW, true)]);
    let mut events = vec![registered(), granted(), password_set(PW, true)];
    events.push(CustomerEvent::PasswordRehashed {
        password_hash: fake_hash(PW),
        at: now(),
    });
    let after = state(events);
    assert_eq!(after.login_epoch(), before.login_epoch());
    assert!(after.must_change_password(), "still temporary");
    assert_eq!(after.password_hash(), Some(&fake_hash(PW)));
}

#[test]
fn a_current_hash_is_left_alone() {
    framework()
        .given(with_access())
        .when(upgrade(PW))
        .then_expect_events(vec![]);
}

#[test]
fn a_rehash_needs_the_right_password() {
    framework()
        .given(with_old_hash())
        .when(upgrade(PW2))
        .then_expect_error(CustomerError::WrongPassword);
}

#[test]
fn a_rehash_needs_access() {
    let mut given = with_old_hash();
    given.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: earlier(),
    });
    framework()
        .given(given)
        .when(upgrade(PW))
        .then_expect_error(CustomerError::NoAccess);
}

// ---------------------------------------------------------------------------
// 9. ImportCustomer (bulk import with the old system's password hashes)
// ---------------------------------------------------------------------------

fn import_of(hash: Option<PasswordHash>) -> crate::ImportCustomer {
    crate::ImportCustomer {
        customer_id: id(),
        source: crate::ImportSource::parse("old-portal").unwrap(),
        external_id: Some(crate::ExternalId::parse("1001").unwrap()),
        email: email(OLD),
        name: Some(CustomerName::parse("Ann Smith").unwrap()),
        access: Some(Role::CustomerCenter),
        password_hash: hash,
        must_change_password: false,
        send_notification: false,
    }
}

fn import(i: crate::ImportCustomer) -> CustomerCommand {
    CustomerCommand::ImportCustomer(Box::new(i))
}

/// A hash "from the old system": it verifies, and needs a rehash.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn foreign_hash() -> PasswordHash {
    crate::services::fakes::FakeHasher::old_hash_of(PW)
}

fn imported_event(at: DateTime<Utc>) -> CustomerEvent {
    CustomerEvent::CustomerImported {
        customer_id: id(),
        source: crate::ImportSource::parse("old-portal").unwrap(),
        external_id: Some(Personal::Known(crate::ExternalId::parse("1001").unwrap())),
        email: Personal::Known(email(OLD)),
        name: Some(Personal::Known(CustomerName::parse("Ann Smith").unwrap())),
        access: Some(Role::CustomerCenter),
        password_hash: Some(foreign_hash()),
        must_change_password: false,
        at,
    }
}

#[test]
fn an_imported_customer_keeps_its_old_hash_and_has_access() {
    framework()
        .given_no_previous_events()
        .when(import(import_of(Some(foreign_hash()))))
        .then_expect_events(vec![imported_event(now())]);
    let after = state(vec![imported_event(now())]);
    assert!(after.has_access());
    assert_eq!(after.password_hash(), Some(&foreign_hash()));
    assert_eq!(after.email(), Some(&email(OLD)));
}

#[test]
fn an_imported_hash_is_rehashed_at_the_next_login() {
    framework()
        .given(vec![imported_event(earlier())])
        .when(upgrade(PW))
        .then_expect_events(vec![CustomerEvent::PasswordRehashed {
            password_hash: fake_hash(PW),
            at: now(),
        }]);
}

#[test]
fn importing_the_same_content_again_writes_nothing_even_after_a_rehash() {
    framework()
        .given(vec![
            imported_event(earlier()),
            CustomerEvent::PasswordRehashed {
                password_hash: fake_hash(PW),
                at: earlier(),
            },
        ])
        .when(import(import_of(Some(foreign_hash()))))
        .then_expect_events(vec![]);
}

#[test]
fn importing_other_content_for_an_imported_customer_is_a_conflict() {
    let mut other = import_of(Some(foreign_hash()));
    other.email = email(NEW);
    framework()
        .given(vec![imported_event(earlier())])
        .when(import(other))
        .then_expect_error(CustomerError::ImportConflict);
}

#[test]
fn importing_over_a_customer_that_was_not_imported_is_a_conflict() {
    framework()
        .given(vec![registered()])
        .when(import(import_of(Some(foreign_hash()))))
        .then_expect_error(CustomerError::ImportConflict);
}

#[test]
fn an_imported_hash_the_hasher_does_not_verify_is_refused_without_quoting_it() {
    let hash = "5f4dcc3b5aa765d61d8327deb882cf99";
    let err = block_on(state(vec![]).decide(
        import(import_of(Some(PasswordHash::new(hash)))),
        &services_at(now()),
    ))
    .unwrap_err();
    assert_eq!(err.code(), "unsupported_password_hash");
    assert!(!err.to_string().contains(hash), "{err}");
}

#[test]
fn an_imported_customer_with_access_needs_a_hash_or_a_setup_link() {
    framework()
        .given_no_previous_events()
        .when(import(import_of(None)))
        .then_expect_error(CustomerError::LoginHasNoPassword { email: email(OLD) });
}

#[test]
fn an_imported_customer_with_access_and_no_hash_gets_a_setup_link() {
    let mut with_link = import_of(None);
    with_link.send_notification = true;
    let decision = block_on(state(vec![]).decide(import(with_link), &services_at(now()))).unwrap();
    assert_eq!(decision.events.len(), 2);
    assert!(matches!(
        &decision.events[1],
        CustomerEvent::AccessNotificationSent {
            setup_link: Some(_),
            ..
        }
    ));
    assert_eq!(decision.issued.len(), 1);
}

#[test]
fn a_hash_without_access_and_a_notification_with_a_hash_are_refused() {
    let mut no_access = import_of(Some(foreign_hash()));
    no_access.access = None;
    let mut both = import_of(Some(foreign_hash()));
    both.send_notification = true;
    let mut must_change_without_hash = import_of(None);
    must_change_without_hash.must_change_password = true;
    must_change_without_hash.send_notification = true;
    for (command, field) in [
        (no_access, "password_hash"),
        (both, "send_notification"),
        (must_change_without_hash, "must_change_password"),
    ] {
        let err = block_on(state(vec![]).decide(import(command), &services_at(now()))).unwrap_err();
        assert!(
            matches!(&err, CustomerError::InvalidImport { field: f, .. } if *f == field),
            "{err:?}"
        );
    }
}

#[test]
fn an_import_without_access_is_just_data() {
    let mut plain = import_of(None);
    plain.access = None;
    let decision = block_on(state(vec![]).decide(import(plain), &services_at(now()))).unwrap();
    let after = state(decision.events);
    assert!(after.is_registered() && !after.has_access() && !after.has_password());
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[test]
fn events_never_contain_a_plain_password_or_token() {
    let services = services_at(now());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut all = Vec::new();
    let mut tokens = Vec::new();
    rt.block_on(async {
        let mut c = state(vec![registered()]);
        for cmd in [
            CustomerCommand::GrantAccess {
                role: Role::CustomerCenter,
                credential: manual(true),
            },
            CustomerCommand::SendAccessNotification,
            CustomerCommand::ChangeEmail {
                email: email(NEW),
                credential: Credential::SetupLink,
            },
        ] {
            let decision = c.decide(cmd, &services).await.unwrap();
            tokens.extend(decision.issued);
            for e in decision.events {
                all.push(e.clone());
                c.apply(e);
            }
        }
    });
    assert_eq!(tokens.len(), 2);
    let json = serde_json::to_string(&all).unwrap();
    for t in &tokens {
        assert!(!json.contains(t.token.expose()), "token in {json}");
        assert!(
            json.contains(t.digest.as_str()),
            "digest missing from {json}"
        );
    }
    assert!(!json.contains(PW), "plain password in {json}");
}

#[test]
fn every_event_has_a_type_and_a_version() {
    for (name, version) in crate::events::EVENT_VERSIONS {
        assert!(!name.is_empty());
        let parts: Vec<_> = version.split('.').collect();
        assert!(
            parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "{name} {version}"
        );
    }
    let e = granted();
    assert_eq!(cqrs_es::DomainEvent::event_type(&e), "AccessGranted");
    assert_eq!(cqrs_es::DomainEvent::event_version(&e), "1.1");
}

#[test]
fn a_customer_holds_its_login_only_with_access_and_the_target_of_a_pending_change() {
    assert!(state(vec![registered()]).reserved_emails(now()).is_empty());
    let mut events = with_access();
    assert_eq!(
        state(events.clone()).reserved_emails(now()),
        vec![(email(OLD), ReservationKind::Login)]
    );
    events.push(email_change_requested("t", now() + Duration::hours(1)));
    assert_eq!(
        state(events.clone()).reserved_emails(now()),
        vec![
            (email(OLD), ReservationKind::Login),
            (email(NEW), ReservationKind::PendingChange)
        ]
    );
    events.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: now(),
    });
    assert!(state(events).reserved_emails(now()).is_empty());
}

#[test]
fn an_expired_email_change_no_longer_reserves_its_target_and_shows_as_expired() {
    let mut events = with_access();
    events.push(email_change_requested("t", now() + Duration::hours(1)));
    let customer = state(events);
    let pending = customer.pending_email_change().unwrap();
    assert!(!pending.is_expired(now()));
    assert!(pending.is_expired(now() + Duration::hours(1)));
    assert_eq!(
        customer.reserved_emails(now() + Duration::hours(1)),
        vec![(email(OLD), ReservationKind::Login)]
    );
}

#[test]
fn confirming_an_expired_email_change_is_invalid_token_and_writes_nothing() {
    let mut given = with_access();
    given.push(email_change_requested("tok", now() - Duration::seconds(1)));
    framework()
        .given(given)
        .when(CustomerCommand::ConfirmEmailChange {
            token: Secret::new("tok"),
        })
        .then_expect_error(CustomerError::InvalidToken);
}

#[test]
fn a_link_status_says_live_expired_or_dead_without_using_the_link() {
    let setup = TokenPurpose::PasswordSetup;
    let change = TokenPurpose::EmailChange;
    let token = |t: &str| Secret::new(t);
    // Setup links: live, expired, wrong, used, voided by a newer one, and
    // without access.
    let live = state(granted_with_link(now() + Duration::hours(1)));
    assert_eq!(
        live.link_status(setup, &token("link"), now()),
        LinkStatus::Live
    );
    assert_eq!(
        live.link_status(setup, &token("nope"), now()),
        LinkStatus::Dead
    );
    assert_eq!(
        live.link_status(change, &token("link"), now()),
        LinkStatus::Dead
    );
    assert_eq!(
        live.link_status(setup, &token("link"), now() + Duration::hours(1)),
        LinkStatus::Expired
    );
    let mut used = granted_with_link(now() + Duration::hours(1));
    used.push(CustomerEvent::PasswordSetupCompleted {
        password_hash: fake_hash(PW),
        at: earlier(),
    });
    assert_eq!(
        state(used).link_status(setup, &token("link"), now()),
        LinkStatus::Dead
    );
    let mut voided = granted_with_link(now() + Duration::hours(1));
    voided.push(setup_link_sent("newer", now() + Duration::hours(2)));
    let voided = state(voided);
    assert_eq!(
        voided.link_status(setup, &token("link"), now()),
        LinkStatus::Dead
    );
    assert_eq!(
        voided.link_status(setup, &token("newer"), now()),
        LinkStatus::Live
    );
    let mut revoked = granted_with_link(now() + Duration::hours(1));
    revoked.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: earlier(),
    });
    assert_eq!(
        state(revoked).link_status(setup, &token("link"), now()),
        LinkStatus::Dead
    );
    assert_eq!(
        Customer::default().link_status(setup, &token("link"), now()),
        LinkStatus::Dead
    );
    // Email change links: live, expired, used.
    let mut given = with_access();
    given.push(email_change_requested("tok", now() + Duration::hours(1)));
    let pending = state(given.clone());
    assert_eq!(
        pending.link_status(change, &token("tok"), now()),
        LinkStatus::Live
    );
    assert_eq!(
        pending.link_status(change, &token("tok"), now() + Duration::hours(2)),
        LinkStatus::Expired
    );
    given.push(CustomerEvent::EmailChangeConfirmed {
        old_email: Personal::Known(email(OLD)),
        new_email: Personal::Known(email(NEW)),
        at: earlier(),
    });
    assert_eq!(
        state(given).link_status(change, &token("tok"), now()),
        LinkStatus::Dead
    );
}

#[test]
fn sessions_end_when_the_login_changes_and_only_then() {
    let base = with_access();
    let epoch = state(base.clone()).login_epoch();
    let mut unchanged = base.clone();
    unchanged.push(setup_link_sent("t", now() + Duration::hours(1)));
    unchanged.push(email_change_requested("e", now() + Duration::hours(1)));
    assert_eq!(state(unchanged).login_epoch(), epoch);
    for change in [
        CustomerEvent::PasswordChanged {
            password_hash: fake_hash(PW2),
            at: now(),
        },
        CustomerEvent::AccessRevoked {
            reason: None,
            at: now(),
        },
        CustomerEvent::EmailChangeConfirmed {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        },
        CustomerEvent::EmailChanged {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        },
    ] {
        let mut events = base.clone();
        events.push(change.clone());
        assert!(state(events).login_epoch() > epoch, "{change:?}");
    }
    assert_eq!(state(base).updated_at(), Some(earlier()));
}

// ---------------------------------------------------------------------------
// Forgetting a customer (right to erasure)
// ---------------------------------------------------------------------------

#[test]
fn forget_revokes_access_then_records_the_customer_forgotten() {
    framework()
        .given(with_access())
        .when(CustomerCommand::ForgetCustomer)
        .then_expect_events(vec![
            CustomerEvent::AccessRevoked {
                reason: Some("the customer was forgotten".into()),
                at: now(),
            },
            CustomerEvent::CustomerForgotten { at: now() },
        ]);
}

#[test]
fn forget_without_access_only_records_the_customer_forgotten() {
    framework()
        .given(vec![registered()])
        .when(CustomerCommand::ForgetCustomer)
        .then_expect_events(vec![CustomerEvent::CustomerForgotten { at: now() }]);
}

#[test]
fn forget_of_an_unregistered_customer_is_customer_not_found() {
    framework()
        .given_no_previous_events()
        .when(CustomerCommand::ForgetCustomer)
        .then_expect_error(CustomerError::CustomerNotFound);
}

#[test]
fn a_forgotten_customer_takes_no_more_commands() {
    let mut history = with_access();
    history.push(CustomerEvent::CustomerForgotten { at: now() });
    for command in [
        CustomerCommand::ForgetCustomer,
        CustomerCommand::SendAccessNotification,
        CustomerCommand::RegisterCustomer {
            customer_id: id(),
            email: email(NEW),
            name: None,
        },
        CustomerCommand::ChangeEmail {
            email: email(NEW),
            credential: Credential::None,
        },
    ] {
        framework()
            .given(history.clone())
            .when(command)
            .then_expect_error(CustomerError::CustomerForgotten);
    }
}

#[test]
fn a_forgotten_customer_keeps_its_id_and_nothing_personal() {
    let mut history = with_access();
    history.push(CustomerEvent::CustomerForgotten { at: now() });
    let customer = state(history);
    assert!(customer.is_forgotten());
    assert_eq!(customer.id(), Some(id()));
    assert_eq!(customer.email(), None);
    assert_eq!(customer.name(), None);
    assert!(!customer.has_access() && !customer.has_password());
    assert!(customer.setup_link().is_none() && customer.reserved_emails(now()).is_empty());
}

#[test]
fn events_whose_personal_data_is_forgotten_still_replay() {
    // As the store reads a forgotten customer's stream: every personal
    // field forgotten.
    let history = vec![
        CustomerEvent::CustomerRegistered {
            customer_id: id(),
            email: Personal::Forgotten,
            name: Some(Personal::Forgotten),
            at: earlier(),
        },
        granted(),
        CustomerEvent::EmailChangeRequested {
            old_email: Personal::Forgotten,
            new_email: Personal::Forgotten,
            token_digest: TokenDigest::of("t"),
            expires_at: now(),
            at: earlier(),
        },
        CustomerEvent::AccessRevoked {
            reason: None,
            at: earlier(),
        },
        CustomerEvent::CustomerForgotten { at: now() },
    ];
    let customer = state(history);
    assert!(customer.is_forgotten());
    assert_eq!(customer.email(), None);
    assert!(customer.pending_email_change().is_none());
}

// ---------------------------------------------------------------------------
// Second factor: TOTP (RFC 6238) and recovery codes
// ---------------------------------------------------------------------------

use crate::values::{recovery_code, recovery_code_digest, TotpSecret};

/// The time step of `now()` (2026-11-27T12:00:00Z).
const STEP: u64 = 59_859_360;
/// Codes of the fakes' first secret (bytes all 1), computed with Python's
/// standard library (`hmac`, `hashlib.sha1`): an implementation
/// independent of the one under test.
const CODE_2_BEFORE: &str = "575763";
const CODE_BEFORE: &str = "981112";
const CODE_NOW: &str = "749700";
const CODE_AFTER: &str = "499536";
const CODE_2_AFTER: &str = "511586";
/// The code of the second secret (bytes all 2) at `now()`.
const CODE2_NOW: &str = "985786";

fn fake_secret(n: u8) -> TotpSecret {
    TotpSecret::from_bytes([n; crate::values::TOTP_SECRET_BYTES])
}

/// The recovery code the fakes make from their `k`-th fill of random bytes.
fn rc(k: u8) -> Secret {
    recovery_code([k; crate::values::RECOVERY_CODE_BYTES])
}

fn rc_digests(ks: impl IntoIterator<Item = u8>) -> Vec<TokenDigest> {
    ks.into_iter()
        .map(|k| recovery_code_digest(rc(k).expose()))
        .collect()
}

fn totp_begun(n: u8) -> CustomerEvent {
    CustomerEvent::TotpEnrollmentBegun {
        totp_secret: Personal::Known(fake_secret(n)),
        at: earlier(),
    }
}

/// A customer with access, TOTP enrolled (secret 1, an hour ago) and
/// recovery codes 21..=30.
fn with_second_factor() -> Vec<CustomerEvent> {
    let mut events = with_access();
    events.extend([
        totp_begun(1),
        CustomerEvent::TotpEnrolled {
            step: STEP - 120,
            at: earlier(),
        },
        CustomerEvent::RecoveryCodesIssued {
            recovery_code_digests: rc_digests(21..=30),
            at: earlier(),
        },
    ]);
    events
}

fn verify(code: &str) -> CustomerCommand {
    CustomerCommand::VerifySecondFactor {
        code: Secret::new(code),
    }
}

fn confirm(code: &str) -> CustomerCommand {
    CustomerCommand::ConfirmTotpEnrollment {
        code: Secret::new(code),
    }
}

fn then_error(given: Vec<CustomerEvent>, command: CustomerCommand, error: CustomerError) {
    framework()
        .given(given)
        .when(command)
        .then_expect_error(error);
}

#[test]
fn begin_totp_enrollment_needs_access() {
    then_error(
        vec![registered()],
        CustomerCommand::BeginTotpEnrollment,
        CustomerError::NoAccess,
    );
}

#[test]
fn begin_totp_enrollment_issues_a_160_bit_secret_kept_pending() {
    framework()
        .given(with_access())
        .when(CustomerCommand::BeginTotpEnrollment)
        .then_expect_events(vec![CustomerEvent::TotpEnrollmentBegun {
            totp_secret: Personal::Known(fake_secret(1)),
            at: now(),
        }]);
    let mut events = with_access();
    events.push(totp_begun(1));
    let c = state(events);
    assert!(c.second_factor_pending() && !c.has_second_factor());
    assert_eq!(c.pending_totp_secret(), Some(&fake_secret(1)));
}

#[test]
fn a_newer_pending_secret_replaces_an_older_one() {
    let mut events = with_access();
    events.extend([totp_begun(1), totp_begun(2)]);
    assert_eq!(
        state(events.clone()).pending_totp_secret(),
        Some(&fake_secret(2))
    );
    then_error(
        events.clone(),
        confirm(CODE_NOW),
        CustomerError::InvalidCode,
    );
    let decision = block_on(state(events).decide(confirm(CODE2_NOW), &services_at(now()))).unwrap();
    assert!(matches!(
        decision.events[0],
        CustomerEvent::TotpEnrolled { step: STEP, .. }
    ));
}

#[test]
fn begin_totp_enrollment_with_a_second_factor_is_second_factor_already_enrolled() {
    then_error(
        with_second_factor(),
        CustomerCommand::BeginTotpEnrollment,
        CustomerError::SecondFactorAlreadyEnrolled,
    );
}

#[test]
fn confirm_with_a_valid_code_enrolls_and_issues_ten_recovery_codes_kept_only_as_digests() {
    let mut events = with_access();
    events.push(totp_begun(1));
    framework()
        .given(events.clone())
        .when(confirm(CODE_NOW))
        .then_expect_events(vec![
            CustomerEvent::TotpEnrolled {
                step: STEP,
                at: now(),
            },
            CustomerEvent::RecoveryCodesIssued {
                recovery_code_digests: rc_digests(1..=10),
                at: now(),
            },
        ]);
    let decision =
        block_on(state(events.clone()).decide(confirm(CODE_NOW), &services_at(now()))).unwrap();
    let shown: Vec<&str> = decision.recovery_codes.iter().map(Secret::expose).collect();
    assert_eq!(shown.len(), 10);
    assert_eq!(shown[0], "aeaq-caib-aeaq-caib");
    let json = serde_json::to_string(&decision.events).unwrap();
    for code in &shown {
        assert!(
            !json.contains(code) && !json.contains(&code.replace('-', "")),
            "{json}"
        );
    }
    events.extend(decision.events);
    let c = state(events);
    assert!(c.has_second_factor() && !c.second_factor_pending());
    assert_eq!(c.recovery_codes_left(), 10);
}

#[test]
fn confirm_with_a_wrong_or_out_of_time_code_is_invalid_code() {
    let mut events = with_access();
    events.push(totp_begun(1));
    for code in ["000000", CODE_2_BEFORE, CODE_2_AFTER, "74970", "abcdef"] {
        then_error(events.clone(), confirm(code), CustomerError::InvalidCode);
    }
}

#[test]
fn confirm_without_a_pending_enrollment_is_no_pending_enrollment() {
    then_error(
        with_access(),
        confirm(CODE_NOW),
        CustomerError::NoPendingEnrollment,
    );
}

#[test]
fn a_code_one_step_either_way_is_accepted_at_login() {
    for (code, step) in [
        (CODE_BEFORE, STEP - 1),
        (CODE_NOW, STEP),
        (CODE_AFTER, STEP + 1),
    ] {
        framework()
            .given(with_second_factor())
            .when(verify(code))
            .then_expect_events(vec![CustomerEvent::TotpCodeAccepted { step, at: now() }]);
    }
    for code in [CODE_2_BEFORE, CODE_2_AFTER, "123456"] {
        then_error(
            with_second_factor(),
            verify(code),
            CustomerError::InvalidCode,
        );
    }
}

#[test]
fn a_totp_step_accepted_once_is_refused_again() {
    let mut events = with_second_factor();
    events.push(CustomerEvent::TotpCodeAccepted {
        step: STEP,
        at: now(),
    });
    then_error(events.clone(), verify(CODE_NOW), CustomerError::InvalidCode);
    then_error(
        events.clone(),
        verify(CODE_BEFORE),
        CustomerError::InvalidCode,
    );
    framework()
        .given(events)
        .when(verify(CODE_AFTER))
        .then_expect_events(vec![CustomerEvent::TotpCodeAccepted {
            step: STEP + 1,
            at: now(),
        }]);
}

#[test]
fn the_code_that_confirmed_the_enrollment_is_not_accepted_at_login() {
    let mut events = with_access();
    events.extend([
        totp_begun(1),
        CustomerEvent::TotpEnrolled {
            step: STEP,
            at: now(),
        },
    ]);
    then_error(events, verify(CODE_NOW), CustomerError::InvalidCode);
}

#[test]
fn a_recovery_code_works_once_in_any_case_and_grouping() {
    let digest = recovery_code_digest(rc(23).expose());
    framework()
        .given(with_second_factor())
        .when(verify(&rc(23).expose().to_uppercase().replace('-', " ")))
        .then_expect_events(vec![CustomerEvent::RecoveryCodeUsed {
            recovery_code_digest: digest.clone(),
            at: now(),
        }]);
    let mut events = with_second_factor();
    events.push(CustomerEvent::RecoveryCodeUsed {
        recovery_code_digest: digest,
        at: now(),
    });
    assert_eq!(state(events.clone()).recovery_codes_left(), 9);
    then_error(
        events.clone(),
        verify(rc(23).expose()),
        CustomerError::InvalidCode,
    );
    // The others still work.
    framework()
        .given(events)
        .when(verify(rc(24).expose()))
        .then_expect_events(vec![CustomerEvent::RecoveryCodeUsed {
            recovery_code_digest: recovery_code_digest(rc(24).expose()),
            at: now(),
        }]);
}

#[test]
fn verify_without_a_second_factor_is_no_second_factor_and_without_access_no_access() {
    then_error(
        with_access(),
        verify(CODE_NOW),
        CustomerError::NoSecondFactor,
    );
    let mut pending = with_access();
    pending.push(totp_begun(1));
    then_error(pending, verify(CODE_NOW), CustomerError::NoSecondFactor);
    then_error(
        vec![registered()],
        verify(CODE_NOW),
        CustomerError::NoAccess,
    );
}

#[test]
fn regenerating_recovery_codes_replaces_the_old_set() {
    framework()
        .given(with_second_factor())
        .when(CustomerCommand::RegenerateRecoveryCodes {
            code: Secret::new(CODE_NOW),
        })
        .then_expect_events(vec![
            CustomerEvent::TotpCodeAccepted {
                step: STEP,
                at: now(),
            },
            CustomerEvent::RecoveryCodesIssued {
                recovery_code_digests: rc_digests(1..=10),
                at: now(),
            },
        ]);
    let mut events = with_second_factor();
    events.push(CustomerEvent::RecoveryCodesIssued {
        recovery_code_digests: rc_digests(1..=10),
        at: now(),
    });
    then_error(events, verify(rc(21).expose()), CustomerError::InvalidCode);
}

#[test]
fn regenerating_recovery_codes_needs_a_valid_code() {
    then_error(
        with_second_factor(),
        CustomerCommand::RegenerateRecoveryCodes {
            code: Secret::new("000000"),
        },
        CustomerError::InvalidCode,
    );
    then_error(
        with_access(),
        CustomerCommand::RegenerateRecoveryCodes {
            code: Secret::new(CODE_NOW),
        },
        CustomerError::NoSecondFactor,
    );
}

fn remove(password: &str, code: &str) -> CustomerCommand {
    CustomerCommand::RemoveTotp {
        current_password: Secret::new(password),
        code: Secret::new(code),
    }
}

#[test]
fn removing_totp_needs_the_password_and_a_code() {
    then_error(
        with_second_factor(),
        remove(PW2, CODE_NOW),
        CustomerError::WrongPassword,
    );
    then_error(
        with_second_factor(),
        remove(PW, "000000"),
        CustomerError::InvalidCode,
    );
    then_error(
        with_access(),
        remove(PW, CODE_NOW),
        CustomerError::NoSecondFactor,
    );
    framework()
        .given(with_second_factor())
        .when(remove(PW, CODE_NOW))
        .then_expect_events(vec![
            CustomerEvent::TotpCodeAccepted {
                step: STEP,
                at: now(),
            },
            CustomerEvent::TotpRemoved { at: now() },
        ]);
    let mut events = with_second_factor();
    events.push(CustomerEvent::TotpRemoved { at: now() });
    let c = state(events);
    assert!(!c.has_second_factor() && c.recovery_codes_left() == 0);
}

#[test]
fn an_administrator_resets_the_second_factor_with_a_notice_to_the_login_email() {
    framework()
        .given(with_second_factor())
        .when(CustomerCommand::ResetSecondFactor {
            reason: Some("  lost phone ".into()),
        })
        .then_expect_events(vec![CustomerEvent::SecondFactorReset {
            reason: Some("lost phone".into()),
            recipient: Personal::Known(email(OLD)),
            at: now(),
        }]);
    let before = state(with_second_factor());
    let mut events = with_second_factor();
    events.push(CustomerEvent::SecondFactorReset {
        reason: None,
        recipient: Personal::Known(email(OLD)),
        at: now(),
    });
    let after = state(events);
    assert!(!after.has_second_factor() && after.recovery_codes_left() == 0);
    // A reset ends the customer's sessions.
    assert!(after.login_epoch() > before.login_epoch());
}

#[test]
fn resetting_without_a_second_factor_is_no_second_factor() {
    then_error(
        with_access(),
        CustomerCommand::ResetSecondFactor { reason: None },
        CustomerError::NoSecondFactor,
    );
    then_error(
        vec![],
        CustomerCommand::ResetSecondFactor { reason: None },
        CustomerError::CustomerNotFound,
    );
}

#[test]
fn revoking_access_also_removes_the_second_factor() {
    let mut events = with_second_factor();
    events.push(CustomerEvent::AccessRevoked {
        reason: None,
        at: now(),
    });
    let c = state(events.clone());
    assert!(!c.has_second_factor() && c.recovery_codes_left() == 0);
    // Access granted again: no second factor asked for.
    events.extend([granted(), password_set(PW, true)]);
    then_error(events, verify(CODE_NOW), CustomerError::NoSecondFactor);
}

#[test]
fn changing_the_email_keeps_the_second_factor() {
    let mut events = with_second_factor();
    events.extend([
        CustomerEvent::EmailChanged {
            old_email: Personal::Known(email(OLD)),
            new_email: Personal::Known(email(NEW)),
            at: now(),
        },
        password_set(PW, true),
    ]);
    let c = state(events.clone());
    assert!(c.has_second_factor() && c.recovery_codes_left() == 10);
    framework()
        .given(events)
        .when(verify(CODE_NOW))
        .then_expect_events(vec![CustomerEvent::TotpCodeAccepted {
            step: STEP,
            at: now(),
        }]);
}

#[test]
fn a_forgotten_customer_keeps_no_second_factor() {
    let mut events = with_second_factor();
    events.push(CustomerEvent::CustomerForgotten { at: now() });
    let c = state(events);
    assert!(!c.has_second_factor() && c.recovery_codes_left() == 0);
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains(&fake_secret(1).base32()), "{json}");
}

#[test]
fn an_enrolled_second_factor_whose_secret_cannot_be_read_fails_closed() {
    // The secret sealed under a key this process lacks (or forgotten in a
    // replayed export): still a second factor; no TOTP code passes, a
    // recovery code still does.
    let mut events = with_access();
    events.extend([
        CustomerEvent::TotpEnrollmentBegun {
            totp_secret: Personal::Forgotten,
            at: earlier(),
        },
        CustomerEvent::TotpEnrolled {
            step: STEP - 120,
            at: earlier(),
        },
        CustomerEvent::RecoveryCodesIssued {
            recovery_code_digests: rc_digests(21..=30),
            at: earlier(),
        },
    ]);
    assert!(state(events.clone()).has_second_factor());
    framework()
        .given(events.clone())
        .when(verify(CODE_NOW))
        .then_expect_error(CustomerError::InvalidCode);
    let recovery = rc(21);
    framework()
        .given(events)
        .when(verify(recovery.expose()))
        .then_expect_events(vec![CustomerEvent::RecoveryCodeUsed {
            recovery_code_digest: recovery_code_digest(recovery.expose()),
            at: now(),
        }]);
}

#[test]
fn the_state_never_prints_the_totp_secret() {
    let c = state(with_second_factor());
    assert!(!format!("{c:?}").contains(&fake_secret(1).base32()));
}
