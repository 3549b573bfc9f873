//! The names the domain gives its commands and events reach the API and
//! the stored history (command names in logs and metric labels, event type
//! names in the event store, event kinds in the audit trail). They are
//! derived from the variants' names; these tests pin every one of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::{
    CustomerCommand, CustomerError, CustomerEvent, CustomerId, EmailAddress, EventKind,
    ImportCustomer, ImportSource, Password, Role, Secret, ServiceError, ValueError,
};
use chrono::Utc;
use strum::VariantNames;

fn email(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}

fn password() -> Password {
    Password::parse("violet-harbour-31-lantern", &[]).unwrap()
}

#[test]
fn command_names_are_the_snake_case_names_logs_and_metrics_use() {
    let commands = [
        CustomerCommand::RegisterCustomer {
            customer_id: CustomerId::new_random(),
            email: email("ann@example.com"),
            name: None,
        },
        CustomerCommand::ChangeEmail {
            email: email("bob@example.com"),
            credential: Default::default(),
        },
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Default::default(),
        },
        CustomerCommand::SetPassword {
            password: password(),
            password_confirm: Secret::new("x"),
            send_notification: false,
        },
        CustomerCommand::SendAccessNotification,
        CustomerCommand::RevokeAccess { reason: None },
        CustomerCommand::RequestEmailChange {
            current_password: Secret::new("x"),
            new_email: email("new@example.com"),
            new_email_confirm: email("new@example.com"),
        },
        CustomerCommand::ConfirmEmailChange {
            token: Secret::new("t"),
        },
        CustomerCommand::CompletePasswordSetup {
            token: Secret::new("t"),
            password: password(),
            password_confirm: Secret::new("x"),
        },
        CustomerCommand::ChangePassword {
            current_password: Secret::new("x"),
            new_password: password(),
            new_password_confirm: Secret::new("x"),
        },
        CustomerCommand::UpgradePasswordHash {
            password: Secret::new("x"),
        },
        CustomerCommand::ImportCustomer(Box::new(ImportCustomer {
            customer_id: CustomerId::new_random(),
            source: ImportSource::parse("legacy").unwrap(),
            external_id: None,
            email: email("imp@example.com"),
            name: None,
            access: None,
            password_hash: None,
            must_change_password: false,
            send_notification: false,
        })),
        CustomerCommand::ForgetCustomer,
        CustomerCommand::BeginTotpEnrollment,
        CustomerCommand::ConfirmTotpEnrollment {
            code: Secret::new("1"),
        },
        CustomerCommand::VerifySecondFactor {
            code: Secret::new("1"),
        },
        CustomerCommand::RegenerateRecoveryCodes {
            code: Secret::new("1"),
        },
        CustomerCommand::RemoveTotp {
            current_password: Secret::new("x"),
            code: Secret::new("1"),
        },
        CustomerCommand::ResetSecondFactor { reason: None },
    ];
    let names: Vec<&str> = commands.iter().map(CustomerCommand::name).collect();
    assert_eq!(
        names,
        [
            "register_customer",
            "change_email",
            "grant_access",
            "set_password",
            "send_access_notification",
            "revoke_access",
            "request_email_change",
            "confirm_email_change",
            "complete_password_setup",
            "change_password",
            "upgrade_password_hash",
            "import_customer",
            "forget_customer",
            "begin_totp_enrollment",
            "confirm_totp_enrollment",
            "verify_second_factor",
            "regenerate_recovery_codes",
            "remove_totp",
            "reset_second_factor",
        ]
    );
}

#[test]
fn event_kinds_are_the_audit_kinds_in_their_published_order() {
    assert_eq!(
        EventKind::VARIANTS,
        [
            "customer_registered",
            "email_changed",
            "access_granted",
            "password_set",
            "password_cleared",
            "access_notification_sent",
            "access_revoked",
            "email_change_requested",
            "email_change_confirmed",
            "password_setup_completed",
            "password_changed",
            "password_rehashed",
            "customer_forgotten",
            "customer_imported",
            "totp_enrollment_begun",
            "totp_enrolled",
            "recovery_codes_issued",
            "totp_code_accepted",
            "recovery_code_used",
            "totp_removed",
            "second_factor_reset",
        ]
    );
}

#[test]
fn an_event_has_its_stored_type_name_and_its_snake_case_kind() {
    let forgotten = CustomerEvent::CustomerForgotten { at: Utc::now() };
    assert_eq!(forgotten.type_name(), "CustomerForgotten");
    assert_eq!(forgotten.kind(), EventKind::CustomerForgotten);
    let kind: &str = forgotten.kind().into();
    assert_eq!(kind, "customer_forgotten");
    let revoked = CustomerEvent::AccessRevoked {
        reason: None,
        at: Utc::now(),
    };
    assert_eq!(revoked.type_name(), "AccessRevoked");
    let kind: &str = revoked.kind().into();
    assert_eq!(kind, "access_revoked");
}

#[test]
fn error_codes_are_the_stable_codes_the_api_answers_with() {
    let values = [
        ValueError::InvalidEmail("e".into()),
        ValueError::WeakPassword("w".into()),
        ValueError::InvalidCustomerId("c".into()),
        ValueError::InvalidName("n".into()),
        ValueError::UnknownRole("r".into()),
        ValueError::InvalidExternalId("x".into()),
        ValueError::InvalidImportSource("s".into()),
        ValueError::InvalidTotpSecret("t".into()),
    ];
    let codes: Vec<&str> = values.iter().map(ValueError::code).collect();
    assert_eq!(
        codes,
        [
            "invalid_email",
            "weak_password",
            "invalid_customer_id",
            "invalid_name",
            "unknown_role",
            "invalid_external_id",
            "invalid_import_source",
            "invalid_totp_secret",
        ]
    );
    let errors = [
        CustomerError::LoginHasNoPassword {
            email: email("ann@example.com"),
        },
        CustomerError::PasswordMismatch,
        CustomerError::EmailMismatch,
        CustomerError::EmailUnchanged,
        CustomerError::NoAccess,
        CustomerError::AccessAlreadyGranted,
        CustomerError::WrongPassword,
        CustomerError::InvalidToken,
        CustomerError::InvalidCode,
        CustomerError::SecondFactorAlreadyEnrolled,
        CustomerError::NoPendingEnrollment,
        CustomerError::NoSecondFactor,
        CustomerError::CustomerExists,
        CustomerError::CustomerNotFound,
        CustomerError::CustomerForgotten,
        CustomerError::ImportConflict,
        CustomerError::UnsupportedPasswordHash { reason: "r".into() },
        CustomerError::InvalidImport {
            field: "f",
            reason: "r".into(),
        },
        CustomerError::InvalidValue(ValueError::UnknownRole("r".into())),
        CustomerError::Service(ServiceError::failed("s")),
        CustomerError::Service(ServiceError::Overloaded {
            what: "w",
            retry_after_secs: 1,
        }),
    ];
    let codes: Vec<&str> = errors.iter().map(CustomerError::code).collect();
    assert_eq!(
        codes,
        [
            "login_has_no_password",
            "password_mismatch",
            "email_mismatch",
            "email_unchanged",
            "no_access",
            "access_already_granted",
            "wrong_password",
            "invalid_token",
            "invalid_code",
            "second_factor_already_enrolled",
            "no_pending_enrollment",
            "no_second_factor",
            "customer_exists",
            "customer_not_found",
            "customer_forgotten",
            "conflict",
            "unsupported_password_hash",
            "invalid_import",
            "unknown_role",
            "internal",
            "unavailable",
        ]
    );
}
