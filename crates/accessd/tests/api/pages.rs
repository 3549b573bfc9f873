//! The customers' pages over HTTP, with a cookie jar like a browser's: the
//! setup link, login and account, the email change with its confirmation
//! link, temporary passwords, dead links, CSRF, headers and cookie flags.

use reqwest::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// A browser: a cookie jar, following redirects.
pub(crate) struct Browser {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

/// A page as the browser got it (after redirects).
pub(crate) struct Html {
    pub(crate) status: StatusCode,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Html {
    #[track_caller]
    pub(crate) fn expect(self, status: u16, path: &str) -> Self {
        assert_eq!(
            (self.status.as_u16(), self.path.as_str()),
            (status, path),
            "unexpected page: {}",
            self.text
        );
        self
    }

    /// The value of the hidden CSRF field of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        hidden_value(&self.text, "csrf_token").expect("a CSRF field")
    }

    #[track_caller]
    pub(crate) fn has(&self, fragment: &str) -> &Self {
        assert!(
            self.text.contains(fragment),
            "`{fragment}` not in the page:\n{}",
            self.text
        );
        self
    }

    #[track_caller]
    pub(crate) fn lacks(&self, fragment: &str) -> &Self {
        assert!(
            !self.text.contains(fragment),
            "`{fragment}` in the page:\n{}",
            self.text
        );
        self
    }

    /// The `<input>` tag with this id.
    fn input(&self, id: &str) -> String {
        let start = self
            .text
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} in:\n{}", self.text));
        let open = self.text[..start].rfind('<').unwrap();
        let close = start + self.text[start..].find('>').unwrap();
        self.text[open..=close].to_string()
    }
}

pub(crate) fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = start + html[start..].find('"')?;
    Some(html[start..end].to_string())
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            client: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    async fn read(response: reqwest::Response) -> Html {
        let status = response.status();
        let path = match response.url().query() {
            Some(q) => format!("{}?{q}", response.url().path()),
            None => response.url().path().to_string(),
        };
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Html {
            status,
            path,
            headers,
            text,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Html {
        Self::read(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Submits a form of `page` (its CSRF token added) to `action`.
    pub(crate) async fn submit(&self, page: &Html, action: &str, fields: &[(&str, &str)]) -> Html {
        let csrf = page.csrf();
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &csrf));
        form.push(("submit", ""));
        Self::read(
            self.client
                .post(format!("{}{action}", self.base))
                .form(&form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn log_in(&self, email: &str, password: &str) -> Html {
        let page = self.get("/login").await.expect(200, "/login");
        self.submit(&page, "/login", &[("email", email), ("password", password)])
            .await
    }
}

async fn setup_link_then_login_then_account(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("ann@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail("ann@example.com", "/setup-password")
        .await;
    let browser = Browser::new(&app);

    // The link shows the form; opening it (twice, as a mail scanner might)
    // uses nothing.
    let link = format!("/setup-password?token={token}");
    browser.get(&link).await.expect(200, &link);
    let page = browser.get(&link).await.expect(200, &link);
    assert_security_headers(&page.headers);
    page.has("<h1>Set your password</h1>")
        .has(r##"<a class="skip-link" href="#main">"##)
        .has(r#"<main id="main""#)
        .has(r#"<label class="field__label" for="password">"#)
        .has(r#"<label class="field__label" for="password_confirm">"#)
        .has(r#"id="submit""#)
        .lacks("autofocus");
    assert_eq!(hidden_value(&page.text, "token").as_deref(), Some(&*token));
    assert!(page
        .input("password")
        .contains(r#"autocomplete="new-password""#));
    assert!(page
        .input("password")
        .contains(r#"aria-describedby="password-hint""#));
    assert_eq!(
        app.customer(&id).await["access"]["password_set"],
        false,
        "a GET set the password"
    );

    // Errors next to their fields, the first invalid one focused.
    let mismatch = browser
        .submit(
            &page,
            "/setup-password",
            &[
                ("token", &token),
                ("password", PW),
                ("password_confirm", PW2),
            ],
        )
        .await
        .expect(422, "/setup-password");
    mismatch
        .has(r#"id="password_confirm-error""#)
        .has("The two passwords do not match.")
        .has("<title>Error: Set your password");
    let confirm = mismatch.input("password_confirm");
    assert!(confirm.contains(r#"aria-invalid="true""#), "{confirm}");
    assert!(
        confirm.contains(r#"aria-describedby="password_confirm-error""#),
        "{confirm}"
    );
    assert!(confirm.contains("autofocus"), "{confirm}");
    mismatch.lacks(PW).lacks(PW2);

    let weak = browser
        .submit(
            &mismatch,
            "/setup-password",
            &[
                ("token", &token),
                ("password", "password1"),
                ("password_confirm", "password1"),
            ],
        )
        .await
        .expect(422, "/setup-password");
    weak.has(r#"id="password-error""#)
        .has("Choose a stronger password: ");
    assert!(weak
        .input("password")
        .contains(r#"aria-describedby="password-hint password-error""#));

    // Set: on to the login, with a green bar.
    let login = browser
        .submit(
            &weak,
            "/setup-password",
            &[
                ("token", &token),
                ("password", PW),
                ("password_confirm", PW),
            ],
        )
        .await
        .expect(200, "/login?notice=password_set");
    login
        .has(r#"id="status""#)
        .has(r#"role="status""#)
        .has("Your password is set.");
    assert!(login.input("email").contains(r#"autocomplete="username""#));
    assert!(login
        .input("password")
        .contains(r#"autocomplete="current-password""#));

    // The link is used up, and its page says so at once.
    let used = browser.get(&link).await.expect(410, &link);
    used.has("expired or was already used")
        .has("Ask for a new access notification");

    // Log in: the account, with its settings and the logout button.
    let wrong = browser
        .log_in("ann@example.com", PW2)
        .await
        .expect(401, "/login");
    wrong
        .has(r#"id="password-error""#)
        .has("The email address or the password is incorrect.");
    assert!(wrong.input("email").contains(r#"value="ann@example.com""#));
    let account = browser
        .submit(
            &wrong,
            "/login",
            &[("email", "ann@example.com"), ("password", PW)],
        )
        .await
        .expect(200, "/account");
    account
        .has("<h1>Your account</h1>")
        .has(r#"<strong id="login-email">ann@example.com</strong>"#)
        .has(r#"<a id="change-email-link" class="settings__link" href="/account/change-email">Change Email</a>"#)
        .has(r#"<a id="change-password-link" class="settings__link" href="/account/change-password">Change Password</a>"#)
        .has(r#"id="logout""#);
    // The login page sends someone logged in on to the account.
    browser.get("/login").await.expect(200, "/account");

    // Log out: the session ends.
    let out = browser
        .submit(&account, "/logout", &[])
        .await
        .expect(200, "/login?notice=signed_out");
    out.has("You have logged out.");
    browser.get("/account").await.expect(200, "/login");
    app.stop().await;
}

async fn email_change_with_the_confirmation_page(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("bob@example.com").await;
    let browser = Browser::new(&app);
    let other_device = Browser::new(&app);
    browser
        .log_in("bob@example.com", PW)
        .await
        .expect(200, "/account");
    other_device
        .log_in("bob@example.com", PW)
        .await
        .expect(200, "/account");

    let form = browser
        .get("/account/change-email")
        .await
        .expect(200, "/account/change-email");
    form.has("<h1>Change Email</h1>")
        .has(">Current Password</label>")
        .has(">New Email Address</label>")
        .has(">Confirm New Email</label>")
        .has(">Save</button>")
        .lacks(r#"id="status""#);
    assert!(form
        .input("current_password")
        .contains(r#"autocomplete="current-password""#));
    assert!(form.input("new_email").contains(r#"autocomplete="email""#));

    // Wrong password, then addresses that differ, then empty fields.
    let wrong = browser
        .submit(
            &form,
            "/account/change-email",
            &[
                ("current_password", PW2),
                ("new_email", "bob@new.example"),
                ("new_email_confirm", "bob@new.example"),
            ],
        )
        .await
        .expect(403, "/account/change-email");
    wrong
        .has(r#"id="current_password-error""#)
        .has("The current password is incorrect.");
    assert!(wrong.input("current_password").contains("autofocus"));
    assert!(wrong
        .input("new_email")
        .contains(r#"value="bob@new.example""#));
    let differ = browser
        .submit(
            &wrong,
            "/account/change-email",
            &[
                ("current_password", PW),
                ("new_email", "bob@new.example"),
                ("new_email_confirm", "bob@neu.example"),
            ],
        )
        .await
        .expect(422, "/account/change-email");
    differ
        .has(r#"id="new_email_confirm-error""#)
        .has("The two email addresses do not match.");
    let empty = browser
        .submit(
            &differ,
            "/account/change-email",
            &[
                ("current_password", ""),
                ("new_email", "not an address"),
                ("new_email_confirm", ""),
            ],
        )
        .await
        .expect(422, "/account/change-email");
    empty
        .has("Enter your current password.")
        .has("Enter an email address in the correct format")
        .has("Enter the new email address again.");
    assert!(empty.input("current_password").contains("autofocus"));
    assert!(!empty.input("new_email").contains("autofocus"));

    // Saved: the notice's green bar.
    let sent = browser
        .submit(
            &empty,
            "/account/change-email",
            &[
                ("current_password", PW),
                ("new_email", "bob@new.example"),
                ("new_email_confirm", "BOB@new.example"),
            ],
        )
        .await
        .expect(200, "/account/change-email?sent=1");
    sent.has(r#"<div id="status" class="status status--success" role="status">"#)
        .has("Validation email sent successfully.")
        .has("To complete the pending email change, you must click the link provided in the validation email sent to bob@new.example.");
    browser
        .get("/account")
        .await
        .expect(200, "/account")
        .has(r#"<strong id="pending-email">bob@new.example</strong>"#);

    // The link: a button, and nothing changes before it is pressed.
    let token = app
        .token_from_mail("bob@new.example", "/confirm-email")
        .await;
    let link = format!("/confirm-email?token={token}");
    let confirm = browser.get(&link).await.expect(200, &link);
    confirm
        .has("<h1>Confirm your new email address</h1>")
        .has(r#"id="submit""#);
    assert_eq!(app.customer(&id).await["email"], "bob@example.com");
    let done = browser
        .submit(&confirm, "/confirm-email", &[("token", &token)])
        .await
        .expect(200, "/confirm-email");
    done.has(r#"id="status""#)
        .has("Your login email is now bob@new.example.");
    assert_eq!(app.customer(&id).await["email"], "bob@new.example");

    // The change ended every session.
    other_device
        .get("/account")
        .await
        .expect(200, "/login?notice=session_ended")
        .has("Your session has ended.");
    browser.get("/account").await.expect(200, "/login");

    // Used up: its page says so at once.
    browser
        .get(&link)
        .await
        .expect(410, &link)
        .has("expired or was already used");

    // The new address logs in, the old one does not.
    browser
        .log_in("bob@example.com", PW)
        .await
        .expect(401, "/login");
    browser
        .log_in("bob@new.example", PW)
        .await
        .expect(200, "/account")
        .has(r#"<strong id="login-email">bob@new.example</strong>"#);
    app.stop().await;
}

async fn temporary_password_leads_to_change_password(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("cara@example.com").await;
    app.command(
        &id,
        "grant-access",
        json!({"password": PW2, "password_confirm": PW2}),
    )
    .await
    .expect(200);
    let browser = Browser::new(&app);
    let other_device = Browser::new(&app);
    other_device
        .log_in("cara@example.com", PW2)
        .await
        .expect(200, "/account/change-password");

    let page = browser
        .log_in("cara@example.com", PW2)
        .await
        .expect(200, "/account/change-password");
    page.has("<h1>Change Password</h1>")
        .has("is temporary")
        .has(">Current Password</label>")
        .has(">New Password</label>")
        .has(">Confirm New Password</label>")
        .lacks(r#"id="cancel-link""#);
    for id in ["new_password", "new_password_confirm"] {
        assert!(page.input(id).contains(r#"autocomplete="new-password""#));
    }
    browser
        .get("/account")
        .await
        .expect(200, "/account/change-password");
    browser
        .get("/account/change-email")
        .await
        .expect(200, "/account/change-password");

    let mismatch = browser
        .submit(
            &page,
            "/account/change-password",
            &[
                ("current_password", PW2),
                ("new_password", PW3),
                ("new_password_confirm", PW),
            ],
        )
        .await
        .expect(422, "/account/change-password");
    mismatch
        .has(r#"id="new_password_confirm-error""#)
        .has("The two new passwords do not match.");
    let weak = browser
        .submit(
            &mismatch,
            "/account/change-password",
            &[
                ("current_password", PW2),
                ("new_password", "cara@example.com1"),
                ("new_password_confirm", "cara@example.com1"),
            ],
        )
        .await
        .expect(422, "/account/change-password");
    weak.has(r#"id="new_password-error""#)
        .has("Choose a stronger password");

    let changed = browser
        .submit(
            &weak,
            "/account/change-password",
            &[
                ("current_password", PW2),
                ("new_password", PW3),
                ("new_password_confirm", PW3),
            ],
        )
        .await
        .expect(200, "/account?notice=password_changed");
    changed
        .has(r#"id="status""#)
        .has("Your password has been changed.")
        .has("<h1>Your account</h1>");
    // This browser stays logged in (a new session); the other one is out.
    browser
        .get("/account/change-email")
        .await
        .expect(200, "/account/change-email");
    other_device
        .get("/account")
        .await
        .expect(200, "/login?notice=session_ended");
    other_device
        .log_in("cara@example.com", PW2)
        .await
        .expect(401, "/login");
    other_device
        .log_in("cara@example.com", PW3)
        .await
        .expect(200, "/account");
    app.stop().await;
}

async fn dead_links_say_so(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("dan@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let first = app
        .token_from_nth_mail("dan@example.com", "/setup-password", 1)
        .await;
    // A second notification replaces the first link.
    app.command(&id, "send-access-notification", json!({}))
        .await
        .expect(200);
    app.token_from_nth_mail("dan@example.com", "/setup-password", 2)
        .await;
    let browser = Browser::new(&app);

    // Its page says so at once; a form posted with it (from a page opened
    // before the second notification) is refused too.
    let link = format!("/setup-password?token={first}");
    browser
        .get(&link)
        .await
        .expect(410, &link)
        .has("This password setup link has expired or was already used.");
    let page = browser.get("/login").await.expect(200, "/login");
    browser
        .submit(
            &page,
            "/setup-password",
            &[
                ("token", &first),
                ("password", PW),
                ("password_confirm", PW),
            ],
        )
        .await
        .expect(410, "/setup-password")
        .has("<h1>This link is no longer valid</h1>")
        .has("This password setup link has expired or was already used.")
        .has("Ask for a new access notification");

    for path in [
        "/setup-password",
        "/setup-password?token=",
        "/setup-password?token=garbage",
        "/confirm-email?token=not-a-token",
        "/confirm-email",
    ] {
        browser
            .get(path)
            .await
            .expect(410, path)
            .has("expired or was already used")
            .lacks("<form class=\"form\"");
    }
    let page = browser.get("/login").await;
    browser
        .submit(
            &page,
            "/confirm-email",
            &[("token", &format!("{id}.deadbeef"))],
        )
        .await
        .expect(410, "/confirm-email")
        .has("This email confirmation link has expired or was already used.");
    app.stop().await;
}

/// `GET /setup-password` and `GET /confirm-email` check the link against
/// the customer's state when the page opens (without using it): a used
/// or expired link shows the "no longer valid" page at once, before
/// anyone types a password. A live link's page counts nothing; wrong
/// tokens go through the link throttle as on POST.
async fn a_dead_link_says_so_when_its_page_opens(db: Db) {
    let app = TestApp::spawn(db).await;
    let browser = Browser::new(&app);
    let dead = |page: &Html, what: &str| {
        page.has("<h1>This link is no longer valid</h1>")
            .has(what)
            .lacks("<form class=\"form\"");
    };
    const SETUP_DEAD: &str = "This password setup link has expired or was already used.";
    const CONFIRM_DEAD: &str = "This email confirmation link has expired or was already used.";

    // A live setup link shows its form, however often it is opened.
    let id = app.register("eve@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail("eve@example.com", "/setup-password")
        .await;
    let link = format!("/setup-password?token={token}");
    for _ in 0..6 {
        browser
            .get(&link)
            .await
            .expect(200, &link)
            .has(r#"id="password""#);
    }
    // Used: dead at once.
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
    )
    .await
    .expect(200);
    dead(&browser.get(&link).await.expect(410, &link), SETUP_DEAD);

    // A live confirmation link shows its button; used, it is dead.
    let session = app.session("eve@example.com", PW).await;
    app.call(
        Method::POST,
        "/v1/self/change-email",
        Some(&session),
        Some(json!({"current_password": PW, "new_email": "eve@new.example", "new_email_confirm": "eve@new.example"})),
    )
    .await
    .expect(202);
    let token = app
        .token_from_mail("eve@new.example", "/confirm-email")
        .await;
    let link = format!("/confirm-email?token={token}");
    browser
        .get(&link)
        .await
        .expect(200, &link)
        .has(r#"name="token""#);
    app.call(
        Method::POST,
        "/v1/self/confirm-email",
        None,
        Some(json!({"token": token})),
    )
    .await
    .expect(200);
    dead(&browser.get(&link).await.expect(410, &link), CONFIRM_DEAD);

    // Expired: dead at once, both kinds.
    let expired = app
        .customer_with_expired_links("fay@example.com", "fay@new.example")
        .await;
    dead(
        &browser
            .get(&expired.setup)
            .await
            .expect(410, &expired.setup),
        SETUP_DEAD,
    );
    dead(
        &browser
            .get(&expired.confirm)
            .await
            .expect(410, &expired.confirm),
        CONFIRM_DEAD,
    );

    // Wrong tokens on GET count like wrong tokens on POST: the customer's
    // link soon answers 429, the right token included, until the wait.
    let gus = app.register("gus@example.com").await;
    app.command(&gus, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let right = app
        .token_from_mail("gus@example.com", "/setup-password")
        .await;
    let mut statuses = Vec::new();
    for n in 0..7 {
        let wrong = format!("/setup-password?token={gus}.{n:0>32}");
        statuses.push(browser.get(&wrong).await.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        browser
            .get(&format!("/setup-password?token={right}"))
            .await
            .status
            .as_u16(),
        429
    );
    app.stop().await;
}

async fn forms_need_their_csrf_token(db: Db) {
    let app = TestApp::spawn(db).await;
    app.customer_with_password("eve@example.com").await;
    let browser = Browser::new(&app);
    let page = browser.get("/login").await.expect(200, "/login");
    let csrf = page.csrf();
    let url = format!("{}/login", app.base);
    let login = [("email", "eve@example.com"), ("password", PW)];

    // No token, a wrong token, a token without its cookie.
    let post = |form: Vec<(&'static str, String)>| browser.client.post(&url).form(&form).send();
    let fields = |extra: Option<String>| {
        let mut form: Vec<(&'static str, String)> =
            login.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if let Some(token) = extra {
            form.push(("csrf_token", token));
        }
        form
    };
    for form in [
        fields(None),
        fields(Some(String::new())),
        fields(Some("0".repeat(32))),
    ] {
        let answer = Browser::read(post(form).await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        answer
            .has("The form expired, reload the page and try again.")
            .lacks("/account");
    }
    let stranger = reqwest::Client::new();
    let answer = stranger
        .post(&url)
        .form(&fields(Some(csrf.clone())))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);

    // Another origin, or a cross-site request, is refused even with the token.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let answer = browser
            .client
            .post(&url)
            .header(name, value)
            .form(&fields(Some(csrf.clone())))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    // A logout without the token does not log out.
    browser
        .log_in("eve@example.com", PW)
        .await
        .expect(200, "/account");
    let answer = browser
        .client
        .post(format!("{}/logout", app.base))
        .form(&[("csrf_token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    browser.get("/account").await.expect(200, "/account");

    // The same origin (and `Origin: null`, which browsers send under
    // `Referrer-Policy: no-referrer`) with the token goes through.
    for origin in [app.base.as_str(), "null"] {
        let page = browser.get("/account/change-email").await;
        let answer = browser
            .client
            .post(format!("{}/account/change-email", app.base))
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("current_password", PW2),
                ("new_email", "eve@new.example"),
                ("new_email_confirm", "eve@new.example"),
                ("csrf_token", &page.csrf()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "wrong_password");
        assert!(answer
            .text()
            .await
            .unwrap()
            .contains("The current password is incorrect."));
    }
    app.stop().await;
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[track_caller]
pub(crate) fn assert_security_headers(headers: &HeaderMap) {
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
}

async fn headers_and_cookie_flags(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("fay@example.com").await;
    let plain = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();

    // Every page, redirects and errors included, has the headers.
    for path in [
        "/login",
        "/account",
        "/account/change-email",
        "/account/change-password",
        "/setup-password?token=x",
        &format!("/confirm-email?token={id}.abc"),
    ] {
        let answer = plain
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success()
                || answer.status().is_redirection()
                || answer.status() == StatusCode::GONE,
            "{path}: {}",
            answer.status()
        );
        assert_security_headers(answer.headers());
    }
    let forbidden = plain
        .post(format!("{}/login", app.base))
        .form(&[("email", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_security_headers(forbidden.headers());

    // The stylesheet.
    let css = plain
        .get(format!("{}/assets/site.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains(":focus-visible"));

    // Cookies: the CSRF one strict, the session one lax; both HttpOnly, not
    // Secure on plain http.
    let login = plain
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(login.headers());
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let csrf_cookie = &cookies[0];
    assert!(csrf_cookie.starts_with("access_csrf="), "{csrf_cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(csrf_cookie.contains(flag), "{csrf_cookie}");
    }
    assert!(!csrf_cookie.contains("Secure"), "{csrf_cookie}");
    let pair = csrf_cookie.split(';').next().unwrap().to_string();
    let token = pair.trim_start_matches("access_csrf=").to_string();
    assert_eq!(token.len(), 32, "128 bits in hex");
    let html = login.text().await.unwrap();
    assert_eq!(hidden_value(&html, "csrf_token").as_deref(), Some(&*token));

    let answer = plain
        .post(format!("{}/login", app.base))
        .header("cookie", &pair)
        .form(&[
            ("email", "fay@example.com"),
            ("password", PW),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()[LOCATION], "/account");
    assert_security_headers(answer.headers());
    let cookies = set_cookies(answer.headers());
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let session = &cookies[0];
    assert!(session.starts_with("access_session="), "{session}");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(!session.contains("Secure"), "{session}");
    let session_pair = session.split(';').next().unwrap().to_string();

    // Logout clears it.
    let out = plain
        .post(format!("{}/logout", app.base))
        .header("cookie", format!("{pair}; {session_pair}"))
        .form(&[("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookies(out.headers());
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("access_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let after = plain
        .get(format!("{}/account", app.base))
        .header("cookie", &session_pair)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()[LOCATION], "/login?notice=session_ended");

    // The pages are not part of the API's document.
    let doc = app
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let paths = doc.body["paths"].as_object().unwrap();
    for page in [
        "/login",
        "/logout",
        "/account",
        "/setup-password",
        "/confirm-email",
    ] {
        assert!(
            !paths.keys().any(|p| p.starts_with(page)),
            "{page} in the OpenAPI document"
        );
    }
    app.stop().await;

    // With an https public URL, the cookies are Secure and only that
    // origin may post.
    let app = TestApp::spawn_with(db, |c| {
        c.public_url = Some("https://portal.example.com".into())
    })
    .await;
    app.customer_with_password("gus@example.com").await;
    let login = plain
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    let csrf_cookie = set_cookies(login.headers()).remove(0);
    // (The attribute, wherever the cookie crate puts it.)
    assert!(
        csrf_cookie.split(';').any(|a| a.trim() == "Secure"),
        "{csrf_cookie}"
    );
    let pair = csrf_cookie.split(';').next().unwrap().to_string();
    let token = pair.trim_start_matches("access_csrf=").to_string();
    let post = |origin: &'static str| {
        plain
            .post(format!("{}/login", app.base))
            .header("cookie", &pair)
            .header("origin", origin)
            .form(&[
                ("email", "gus@example.com"),
                ("password", PW),
                ("csrf_token", &token),
            ])
            .send()
    };
    assert_eq!(
        post("http://portal.example.com").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let answer = post("https://portal.example.com").await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = set_cookies(answer.headers()).remove(0);
    assert!(session.starts_with("access_session="), "{session}");
    assert!(
        session.split(';').any(|a| a.trim() == "Secure"),
        "{session}"
    );
    app.stop().await;
}

crate::on_both_stores!(
    setup_link_then_login_then_account,
    email_change_with_the_confirmation_page,
    temporary_password_leads_to_change_password,
    dead_links_say_so,
    a_dead_link_says_so_when_its_page_opens,
    forms_need_their_csrf_token,
    headers_and_cookie_flags,
);
