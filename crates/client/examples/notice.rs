//! The notice's story against a running service:
//! `cargo run -p access-client --example notice -- http://127.0.0.1:8080 ak_…`
//! (the admin key `accessd` printed on its first start).

use access_client::{types::*, Client, CommandOptions, Error, ErrorCode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let api = Client::new(url, args.next().unwrap_or_default())?;
    let none = CommandOptions::default();
    let register = RegisterRequest {
        email: "ann@example.com".into(),
        name: Some("Ann".into()),
        customer_id: None,
        reason: None,
    };
    let id = api.register(&register, &none).await?.body.customer_id;
    // New access with neither a password nor a notification: refused.
    let refused = api
        .grant_access(id, &GrantAccessRequest::default(), &none)
        .await
        .err();
    assert_eq!(
        refused.as_ref().and_then(Error::code),
        Some(&ErrorCode::LoginHasNoPassword)
    );
    println!(
        "refused: {}",
        refused
            .as_ref()
            .and_then(Error::message)
            .unwrap_or_default()
    );
    // With a notification (a password-setup link by mail); safe to retry.
    let grant = GrantAccessRequest {
        send_notification: Some(true),
        ..Default::default()
    };
    let granted = api
        .grant_access(
            id,
            &grant,
            &CommandOptions::idempotency_key(format!("grant-{id}")),
        )
        .await?;
    // A new email with a notification, only if nobody changed Ann since.
    let change = ChangeEmailRequest {
        email: "ann.new@example.org".into(),
        password: None,
        password_confirm: None,
        send_notification: Some(true),
        reason: None,
    };
    api.change_email(id, &change, &CommandOptions::if_match(granted.body.version))
        .await?;
    let revoked = api
        .revoke_access(
            id,
            &ReasonRequest {
                reason: Some("contract ended".into()),
            },
            &none,
        )
        .await?;
    println!("{id}: access revoked at version {}", revoked.body.version);
    Ok(())
}
