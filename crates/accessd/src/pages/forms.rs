//! The pages' form kit: the fields of a form with their errors and hints,
//! and the notice (`#status`) at the top of a page.

use std::collections::BTreeMap;

use serde::Serialize;

/// A notice at the top of a page (`#status`): the green bar of a success,
/// or a neutral information.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// `success` or `info`.
    tone: &'static str,
    title: String,
    detail: Option<String>,
}

impl Status {
    pub(crate) fn success(title: impl Into<String>, detail: Option<String>) -> Self {
        Self {
            tone: "success",
            title: title.into(),
            detail,
        }
    }

    pub(crate) fn info(title: impl Into<String>) -> Self {
        Self {
            tone: "info",
            title: title.into(),
            detail: None,
        }
    }
}

/// One input of a form.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Field {
    /// The `id` and `name`.
    id: &'static str,
    label: &'static str,
    /// The input type: `email` or `password`.
    kind: &'static str,
    autocomplete: &'static str,
    hint: Option<&'static str>,
    /// Shown again after an error (never for passwords).
    value: String,
    error: Option<String>,
    autofocus: bool,
    described_by: Option<String>,
}

/// The hint of a new password's field.
const NEW_PASSWORD_HINT: &str = "At least 10 characters. A few unrelated words make a strong password; avoid your email address and common phrases.";

impl Field {
    pub(crate) fn email(id: &'static str, label: &'static str, autocomplete: &'static str) -> Self {
        Self::new(id, label, "email", autocomplete)
    }

    pub(crate) fn password(
        id: &'static str,
        label: &'static str,
        autocomplete: &'static str,
    ) -> Self {
        Self::new(id, label, "password", autocomplete)
    }

    /// A second factor's code: the authenticator app's 6 digits or a
    /// recovery code.
    pub(crate) fn code(id: &'static str, label: &'static str) -> Self {
        Self::new(id, label, "text", "one-time-code")
    }

    /// A new password's field, with the password rules as its hint.
    pub(crate) fn new_password(id: &'static str, label: &'static str) -> Self {
        Self::password(id, label, "new-password").hint(NEW_PASSWORD_HINT)
    }

    fn new(
        id: &'static str,
        label: &'static str,
        kind: &'static str,
        autocomplete: &'static str,
    ) -> Self {
        Self {
            id,
            label,
            kind,
            autocomplete,
            hint: None,
            value: String::new(),
            error: None,
            autofocus: false,
            described_by: None,
        }
    }

    pub(crate) fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The value to show again (ignored for passwords).
    pub(crate) fn value(mut self, value: &str) -> Self {
        if self.kind != "password" {
            self.value = value.trim().to_string();
        }
        self
    }
}

/// A form's fields and errors, in the order shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Form {
    fields: Vec<Field>,
    form_error: Option<String>,
}

impl Form {
    pub(crate) fn new(fields: Vec<Field>) -> Self {
        Self {
            fields,
            form_error: None,
        }
    }

    /// Puts an error next to a field (the first one set wins).
    pub(crate) fn error(&mut self, id: &str, message: impl Into<String>) {
        if let Some(field) = self.fields.iter_mut().find(|f| f.id == id) {
            if field.error.is_none() {
                field.error = Some(message.into());
            }
        }
    }

    /// An error of the whole form (`#form-error`).
    pub(crate) fn form_error(&mut self, message: impl Into<String>) {
        self.form_error = Some(message.into());
    }

    /// Marks every empty field as missing, with its message.
    pub(crate) fn require(&mut self, values: &[(&str, &str, &str)]) {
        for (id, value, message) in values {
            if value.trim().is_empty() {
                self.error(id, *message);
            }
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.form_error.is_some() || self.fields.iter().any(|f| f.error.is_some())
    }

    /// The fields ready to render: `aria-describedby` and the focus on the
    /// first invalid one.
    pub(super) fn finish(mut self) -> (Vec<Field>, Option<String>) {
        let mut focused = false;
        for field in &mut self.fields {
            let mut described = Vec::new();
            if field.hint.is_some() {
                described.push(format!("{}-hint", field.id));
            }
            if field.error.is_some() {
                described.push(format!("{}-error", field.id));
                if !focused {
                    field.autofocus = true;
                    focused = true;
                }
            }
            field.described_by = (!described.is_empty()).then(|| described.join(" "));
        }
        (self.fields, self.form_error)
    }
}

/// The notices a redirect may ask a page to show (`?notice=…`): fixed
/// texts, never from the request.
pub(crate) fn notice(name: Option<&str>) -> Option<Status> {
    let notices: BTreeMap<&str, Status> = BTreeMap::from([
        ("signed_out", Status::success("You have logged out.", None)),
        (
            "password_set",
            Status::success(
                "Your password is set.",
                Some("You can now log in with your email address and the new password.".into()),
            ),
        ),
        (
            "password_changed",
            Status::success("Your password has been changed.", None),
        ),
        (
            "second_factor_removed",
            Status::success("Two-step verification is off.", None),
        ),
        (
            "session_ended",
            Status::info("Your session has ended. Please log in again."),
        ),
    ]);
    notices.get(name?).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_invalid_field_gets_the_focus_and_its_error_is_described() {
        let mut form = Form::new(vec![
            Field::password("current_password", "Current password", "current-password"),
            Field::email("new_email", "New email address", "email").hint("hint"),
            Field::email("new_email_confirm", "Confirm new email", "email"),
        ]);
        form.error("new_email", "first");
        form.error("new_email_confirm", "second");
        form.error("new_email", "ignored");
        let (fields, _) = form.finish();
        assert!(!fields[0].autofocus && fields[0].described_by.is_none());
        assert!(fields[1].autofocus);
        assert_eq!(fields[1].error.as_deref(), Some("first"));
        assert_eq!(
            fields[1].described_by.as_deref(),
            Some("new_email-hint new_email-error")
        );
        assert!(!fields[2].autofocus);
    }
}
