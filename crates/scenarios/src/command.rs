//! The `when:` block: its raw fields, taken one by one, into a
//! `CustomerCommand` built with the same value parsers as the service.

use std::collections::{BTreeMap, BTreeSet};

use access_domain::{
    Credential, CustomerCommand, CustomerError, CustomerId, CustomerName, EmailAddress, ExternalId,
    ImportCustomer, ImportSource, Password, PasswordHash, Role, Secret, ValueError,
};
use serde_json::Value;

use crate::compare::compact;

/// The id `RegisterCustomer` gets when the scenario gives none.
const DEFAULT_CUSTOMER_ID: &str = "6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10";

/// The command names a scenario's `when.command` may use.
pub const COMMANDS: &[&str] = &[
    "RegisterCustomer",
    "ChangeEmail",
    "GrantAccess",
    "SetPassword",
    "SendAccessNotification",
    "RevokeAccess",
    "RequestEmailChange",
    "ConfirmEmailChange",
    "CompletePasswordSetup",
    "ChangePassword",
    "ImportCustomer",
    "BeginTotpEnrollment",
    "ConfirmTotpEnrollment",
    "VerifySecondFactor",
    "RegenerateRecoveryCodes",
    "RemoveTotp",
    "ResetSecondFactor",
];

/// The fields of `when:`, taken one by one; any field left over at the end
/// is reported (it would otherwise be silently ignored).
struct Fields {
    command: String,
    map: BTreeMap<String, Value>,
    taken: BTreeSet<&'static str>,
}

impl Fields {
    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.taken.insert(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn text(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "`when.{key}` must be text, but it is {}; put it in quotes: {key}: \"{}\"",
                compact(&other),
                match &other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                }
            )),
        }
    }

    fn required(&mut self, key: &'static str) -> Result<String, String> {
        self.text(key)?
            .ok_or_else(|| format!("`when.{key}` is missing: {} needs it", self.command))
    }

    fn flag(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(format!(
                "`when.{key}` must be true or false, but it is {}",
                compact(&other)
            )),
        }
    }

    /// The credential of ChangeEmail / GrantAccess, as the HTTP layer builds
    /// it: a manual password when `password` is present, a setup link when
    /// `send_notification: true` (or `setup_link: true`) without a password,
    /// otherwise none.
    fn credential(&mut self) -> Result<RawCredential, String> {
        let password = self.text("password")?;
        let confirm = self.text("password_confirm")?;
        let notify = self.flag("send_notification")?;
        let setup_link = self.flag("setup_link")?;
        match (password, confirm) {
            (Some(password), Some(password_confirm)) => {
                if setup_link == Some(true) {
                    return Err("`when.setup_link: true` cannot go with `when.password`: a \
                         manual password and a setup link are two different choices"
                        .into());
                }
                Ok(RawCredential::Manual {
                    password,
                    password_confirm,
                    send_notification: notify.unwrap_or(false),
                })
            }
            (Some(_), None) => Err("`when.password` needs `when.password_confirm` (the \
                 notice's Confirm Password field)"
                .into()),
            (None, Some(_)) => {
                Err("`when.password_confirm` is given without `when.password`".into())
            }
            (None, None) => match (notify, setup_link) {
                (Some(true), Some(false)) => Err("`when.send_notification: true` without a \
                     password sends a setup link, which contradicts `when.setup_link: false`"
                    .into()),
                (Some(true), _) | (_, Some(true)) => Ok(RawCredential::SetupLink),
                _ => Ok(RawCredential::None),
            },
        }
    }

    fn finish(self) -> Result<(), String> {
        if self.map.is_empty() {
            return Ok(());
        }
        let unused: Vec<&str> = self.map.keys().map(String::as_str).collect();
        let known: Vec<&str> = self.taken.iter().copied().collect();
        Err(format!(
            "{} does not use the field(s) {} (it takes: {})",
            self.command,
            unused
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "no fields".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
}

enum RawCredential {
    None,
    Manual {
        password: String,
        password_confirm: String,
        send_notification: bool,
    },
    SetupLink,
}

impl RawCredential {
    fn parse(self) -> Result<Credential, ValueError> {
        Ok(match self {
            Self::None => Credential::None,
            Self::SetupLink => Credential::SetupLink,
            Self::Manual {
                password,
                password_confirm,
                send_notification,
            } => Credential::ManualPassword {
                password: Password::parse(&password, &[])?,
                password_confirm: Secret::new(password_confirm),
                send_notification,
            },
        })
    }
}

/// Runs the value-type parsers; their errors are the command's outcome.
fn parse(
    build: impl FnOnce() -> Result<CustomerCommand, ValueError>,
) -> Result<CustomerCommand, CustomerError> {
    build().map_err(CustomerError::from)
}

/// Builds the command from `when:`. The outer error is a problem with the
/// scenario file; the inner one a value the domain refuses (weak password,
/// invalid email …), which is the scenario's outcome.
pub(crate) fn build_command(
    when: &BTreeMap<String, Value>,
) -> Result<Result<CustomerCommand, CustomerError>, String> {
    let mut map = when.clone();
    let command = match map.remove("command") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(format!(
                "`when.command` must be a command name, not {}",
                compact(&other)
            ))
        }
        None => {
            return Err(format!(
                "`when.command` is missing; it is one of: {}",
                COMMANDS.join(", ")
            ))
        }
    };
    let mut f = Fields {
        command: command.clone(),
        map,
        taken: BTreeSet::new(),
    };
    let built = match command.as_str() {
        "RegisterCustomer" => {
            let customer_id = f.text("customer_id")?;
            let email = f.required("email")?;
            let name = f.text("name")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::RegisterCustomer {
                    customer_id: customer_id
                        .as_deref()
                        .unwrap_or(DEFAULT_CUSTOMER_ID)
                        .parse::<CustomerId>()?,
                    email: EmailAddress::parse(&email)?,
                    name: name.as_deref().map(CustomerName::parse).transpose()?,
                })
            })
        }
        "ChangeEmail" => {
            let email = f.required("email")?;
            let credential = f.credential()?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::ChangeEmail {
                    email: EmailAddress::parse(&email)?,
                    credential: credential.parse()?,
                })
            })
        }
        "GrantAccess" => {
            let role = f.text("role")?;
            let credential = f.credential()?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::GrantAccess {
                    role: role
                        .as_deref()
                        .map(str::parse::<Role>)
                        .transpose()?
                        .unwrap_or_default(),
                    credential: credential.parse()?,
                })
            })
        }
        "SetPassword" => {
            let password = f.required("password")?;
            let password_confirm = f.required("password_confirm")?;
            let send_notification = f.flag("send_notification")?.unwrap_or(false);
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::SetPassword {
                    password: Password::parse(&password, &[])?,
                    password_confirm: Secret::new(password_confirm),
                    send_notification,
                })
            })
        }
        "SendAccessNotification" => {
            f.finish()?;
            Ok(CustomerCommand::SendAccessNotification)
        }
        "RevokeAccess" => {
            let reason = f.text("reason")?;
            f.finish()?;
            Ok(CustomerCommand::RevokeAccess { reason })
        }
        "RequestEmailChange" => {
            let current_password = f.required("current_password")?;
            let new_email = f.required("new_email")?;
            let new_email_confirm = f.required("new_email_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::RequestEmailChange {
                    current_password: Secret::new(current_password),
                    new_email: EmailAddress::parse(&new_email)?,
                    new_email_confirm: EmailAddress::parse(&new_email_confirm)?,
                })
            })
        }
        "ConfirmEmailChange" => {
            let token = f.required("token")?;
            f.finish()?;
            Ok(CustomerCommand::ConfirmEmailChange {
                token: Secret::new(token),
            })
        }
        "CompletePasswordSetup" => {
            let token = f.required("token")?;
            let password = f.required("password")?;
            let password_confirm = f.required("password_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::CompletePasswordSetup {
                    token: Secret::new(token),
                    password: Password::parse(&password, &[])?,
                    password_confirm: Secret::new(password_confirm),
                })
            })
        }
        "ChangePassword" => {
            let current_password = f.required("current_password")?;
            let new_password = f.required("new_password")?;
            let new_password_confirm = f.required("new_password_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::ChangePassword {
                    current_password: Secret::new(current_password),
                    new_password: Password::parse(&new_password, &[])?,
                    new_password_confirm: Secret::new(new_password_confirm),
                })
            })
        }
        "ImportCustomer" => {
            let customer_id = f.text("customer_id")?;
            let source = f.text("source")?;
            let external_id = f.text("external_id")?;
            let email = f.required("email")?;
            let name = f.text("name")?;
            let access = f.text("access")?;
            let password_hash = f.text("password_hash")?;
            let must_change_password = f.flag("must_change_password")?.unwrap_or(false);
            let send_notification = f.flag("send_notification")?.unwrap_or(false);
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::ImportCustomer(Box::new(ImportCustomer {
                    customer_id: customer_id
                        .as_deref()
                        .unwrap_or(DEFAULT_CUSTOMER_ID)
                        .parse::<CustomerId>()?,
                    source: ImportSource::parse(source.as_deref().unwrap_or("scenario"))?,
                    external_id: external_id.as_deref().map(ExternalId::parse).transpose()?,
                    email: EmailAddress::parse(&email)?,
                    name: name.as_deref().map(CustomerName::parse).transpose()?,
                    access: match access.as_deref() {
                        None | Some("none") => None,
                        Some(role) => Some(role.parse::<Role>()?),
                    },
                    // `hash-of:PLAIN` stands for the fake hasher's hash.
                    password_hash: password_hash
                        .as_deref()
                        .map(|h| PasswordHash::new(crate::compare::resolve(h))),
                    must_change_password,
                    send_notification,
                })))
            })
        }
        "BeginTotpEnrollment" => {
            f.finish()?;
            Ok(CustomerCommand::BeginTotpEnrollment)
        }
        "ConfirmTotpEnrollment" => {
            let code = f.required("code")?;
            f.finish()?;
            Ok(CustomerCommand::ConfirmTotpEnrollment {
                code: Secret::new(code),
            })
        }
        "VerifySecondFactor" => {
            let code = f.required("code")?;
            f.finish()?;
            Ok(CustomerCommand::VerifySecondFactor {
                code: Secret::new(code),
            })
        }
        "RegenerateRecoveryCodes" => {
            let code = f.required("code")?;
            f.finish()?;
            Ok(CustomerCommand::RegenerateRecoveryCodes {
                code: Secret::new(code),
            })
        }
        "RemoveTotp" => {
            let current_password = f.required("current_password")?;
            let code = f.required("code")?;
            f.finish()?;
            Ok(CustomerCommand::RemoveTotp {
                current_password: Secret::new(current_password),
                code: Secret::new(code),
            })
        }
        "ResetSecondFactor" => {
            let reason = f.text("reason")?;
            f.finish()?;
            Ok(CustomerCommand::ResetSecondFactor { reason })
        }
        other => {
            return Err(format!(
                "unknown command `{other}`; it is one of: {}",
                COMMANDS.join(", ")
            ))
        }
    };
    Ok(built)
}
