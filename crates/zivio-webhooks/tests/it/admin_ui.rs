//! The admin UI in a real browser (headless Chromium over WebDriver) against the real binary
//! and a real HTTPS receiver: signing in, adding a webhook and seeing its secret once, a test
//! event's success in the list and the Deliveries view, resend, rotate, disable; an admin
//! without the permission; escaping; cross-site posts; contrast, 360 px width, labels and the
//! keyboard; sign-in links and sessions. The forms' finer points: `admin_forms.rs`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::api::Backend;
use crate::support::browser::{Browser, ENTER, TAB};
use crate::support::sending::{Setup, setup};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) async fn prepared() -> Option<(Setup, Browser)> {
    let browser = Browser::start().await?;
    let setup = setup(Backend::Sqlite, "1s", true).await?;
    let answer = setup
        .api
        .platform(
            Method::PUT,
            "acme/users/u1/password",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    Some((setup, browser))
}

pub(crate) async fn sign_in(setup: &Setup, browser: &Browser, email: &str) {
    browser.open(&setup.api.service.url("/admin")).await;
    assert!(
        browser.url().await.ends_with("/admin/sign-in"),
        "not signed in: sent to sign in"
    );
    browser.type_into("#tenant", "acme").await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("button[type=submit].primary").await;
    browser
        .wait_for_url(|url| !url.ends_with("/admin/sign-in"))
        .await;
}

#[tokio::test]
async fn an_admin_manages_a_webhook_in_the_browser() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    browser
        .wait_for_url(|url| url.ends_with("/admin/webhooks"))
        .await;
    browser.wait_for_text("No webhooks yet", false).await;

    // Add a webhook subscribed to one category; the secret is shown once.
    browser.click("a[href='/admin/webhooks/new']").await;
    browser.type_into("#name", "ERP invoices").await;
    browser.type_into("#url", &setup.receiver.url("/erp")).await;
    browser.click("details:nth-of-type(1) summary").await;
    browser
        .eval(
            "document.querySelector(\"input[value='invoices.*']\").closest('details').open = true",
        )
        .await;
    browser.click("input[value='invoices.*']").await;
    browser.click("form button.primary").await;
    browser.wait_for_url(|url| url.ends_with("/secret")).await;
    let secret = browser
        .eval("return document.getElementById('secret').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.screenshot("secret").await;
    browser.click("[data-copy=secret]").await;
    browser.wait_for_text("Copied", false).await;
    let secret_page = browser.url().await;
    browser.open(&secret_page).await;
    let webhook_page = browser.url().await;
    assert!(
        !webhook_page.ends_with("/secret"),
        "a reload never shows it again"
    );
    let source = browser.source().await;
    assert!(!source.contains(&secret), "the secret is gone");
    assert!(
        source.contains(&format!("whsec_…{}", &secret[secret.len() - 4..])),
        "only its hint"
    );
    assert!(source.contains("invoices.*"));

    // A test event: its success on the page, in the list's health and in the Deliveries view.
    browser.click("form[action$='/test'] button").await;
    browser
        .wait_for_url(|url| url.contains("?test=evt_test_"))
        .await;
    browser.wait_for_text("succeeded", true).await;
    assert_eq!(setup.receiver.received("/erp").len(), 1);
    browser
        .open(&setup.api.service.url("/admin/webhooks"))
        .await;
    let list = browser.wait_for_text("ERP invoices", false).await;
    assert!(list.contains("succeeded") && list.contains("100"), "{list}");
    browser.screenshot("webhooks").await;
    let id = webhook_page.rsplit('/').next().unwrap().to_owned();
    browser
        .open(&setup.api.service.url(&format!(
            "/admin/deliveries?webhook_id={id}&status=succeeded"
        )))
        .await;
    browser.wait_for_row("webhook.test").await;
    browser.screenshot("deliveries").await;
    browser
        .open(
            &setup
                .api
                .service
                .url(&format!("/admin/deliveries?webhook_id={id}&status=failed")),
        )
        .await;
    browser.wait_for_text("No deliveries match", false).await;

    // Open the delivery and resend it.
    browser
        .open(
            &setup
                .api
                .service
                .url(&format!("/admin/deliveries?webhook_id={id}")),
        )
        .await;
    browser.click("tbody a").await;
    let detail = browser.wait_for_text("Request", false).await;
    assert!(
        detail.contains("\"test\": true"),
        "the pretty-printed body: {detail}"
    );
    browser.screenshot("delivery").await;
    browser.click("form[action$='/resend'] button").await;
    browser
        .wait_for_url(|url| url.contains("event_id=evt_test_"))
        .await;
    browser.wait_for_row("webhook.test").await;
    setup
        .receiver
        .wait_for("/erp", 2, std::time::Duration::from_secs(20))
        .await;

    // Rotate (after the confirmation) and see a new secret once.
    browser.open(&webhook_page).await;
    browser.click("form[action$='/rotate'] button").await;
    assert!(
        browser.url().await == webhook_page,
        "rotating needs the confirmation box"
    );
    browser
        .click("form[action$='/rotate'] input[name=confirm]")
        .await;
    browser.click("form[action$='/rotate'] button").await;
    browser.wait_for_url(|url| url.ends_with("/secret")).await;
    let rotated = browser
        .eval("return document.getElementById('secret').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(rotated.starts_with("whsec_") && rotated != secret);

    // Disable.
    browser.open(&webhook_page).await;
    browser.click("form[action$='/disable'] button").await;
    browser.wait_for_text("Disabled", false).await;
    browser.wait_for_url(|url| url == webhook_page).await;
    assert!(browser.exists("form[action$='/enable']").await);
}

#[tokio::test]
async fn admins_without_the_permission_see_no_webhooks_section() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    setup
        .api
        .put_role("acme", "reader", &["invoices:read:tenant"])
        .await;
    setup
        .api
        .put_user("acme", "reader", true, &["reader"])
        .await;
    let answer = setup
        .api
        .platform(
            Method::PUT,
            "acme/users/reader/password",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(answer.status, 204);
    sign_in(&setup, &browser, "reader@acme.example.com").await;
    let page = browser.wait_for_text("webhooks:manage", false).await;
    assert!(page.contains("Ask your platform administrator"), "{page}");
    assert!(!browser.exists("nav a[href='/admin/webhooks']").await);
    browser
        .open(&setup.api.service.url("/admin/webhooks"))
        .await;
    assert!(!browser.exists("nav").await, "no section for them");
}

#[tokio::test]
async fn names_render_as_text_and_cross_site_posts_are_refused() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    let name = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let body = json!({"name": name, "url": setup.receiver.url("/x"), "events": ["*"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    browser
        .open(&setup.api.service.url(&format!("/admin/webhooks/{id}")))
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelector('h1').textContent")
            .await,
        name
    );
    assert!(!browser.dialog_open().await, "no script ran");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('main script, main img').length")
            .await,
        0
    );

    // A post from another site, with the session cookie the browser would attach: refused.
    let session = setup
        .api
        .sign_in("acme", "u1@acme.example.com", PASSWORD)
        .await;
    let url = setup
        .api
        .service
        .url(&format!("/admin/webhooks/{id}/disable"));
    let token = zivio_app::sessions::form_token(&session);
    let client = plain_client();
    let post = |headers: Vec<(&'static str, &'static str)>, body: String| {
        let mut request = client
            .post(&url)
            .header("cookie", format!("zivio_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.body(body).send().await.unwrap().status().as_u16() }
    };
    let with_token = format!("_token={token}");
    let enabled = || async {
        let path = format!("/v4/webhooks/{id}");
        let answer = setup
            .api
            .v4(&setup.key, "acme", Method::GET, &path, None)
            .await;
        answer.body["webhook"]["enabled"].clone()
    };
    // A valid token does not help a request that says it comes from elsewhere…
    assert_eq!(
        post(vec![("sec-fetch-site", "cross-site")], with_token.clone()).await,
        403
    );
    assert_eq!(
        post(vec![("origin", "https://evil.example")], with_token.clone()).await,
        403
    );
    // …and a same-site request without the token is refused too.
    assert_eq!(
        post(
            vec![("sec-fetch-site", "same-origin")],
            "confirm=x".to_owned()
        )
        .await,
        403
    );
    assert_eq!(enabled().await, true, "nothing changed");
    // The same form, same-site and with the token, goes through (the checks above are real).
    assert_eq!(
        post(vec![("sec-fetch-site", "same-origin")], with_token).await,
        303
    );
    assert_eq!(enabled().await, false);

    // Signing in is only refused for a cross-site post (it has no session yet).
    let sign_in = client
        .post(setup.api.service.url("/admin/sign-in"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "tenant=acme&email=u1%40acme.example.com&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), 403);
    // A cross-site form from a browser that sends neither `Sec-Fetch-Site` nor `Origin` has
    // no pre-session cookie and token of this site: refused, and no session is made.
    let body = format!(
        "tenant=acme&email=u1%40acme.example.com&password={}",
        PASSWORD.replace(' ', "+")
    );
    let bare = client
        .post(setup.api.service.url("/admin/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    assert!(bare.headers().get("set-cookie").is_none());
    // Its own cookie with a token it made up does not help either.
    let (cookie, _) = setup.api.sign_in_page().await;
    let forged = client
        .post(setup.api.service.url("/admin/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .body(format!("{body}&_token=0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // The same form with the page's token signs in (the checks above are real).
    let (cookie, token) = setup.api.sign_in_page().await;
    let real = client
        .post(setup.api.service.url("/admin/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .body(format!("{body}&_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 303);
}

/// Contrast (WCAG 2 formula), computed in the page for every element with text of its own.
const CONTRAST_CHECK: &str = r#"
function rgb(text) { const m = text.match(/[\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; }
function lum(c) { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); }
function background(el) { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; }
const failures = [];
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('svg') || el.offsetParent === null) continue;
  const fg = lum(rgb(getComputedStyle(el).color)), bg = lum(background(el));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) failures.push(el.tagName + ' "' + el.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
}
return failures;
"#;

const LABEL_CHECK: &str = r#"
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.outerHTML.slice(0, 80));
"#;

#[tokio::test]
async fn pages_pass_contrast_width_label_and_keyboard_checks() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    let body = json!({"name": "A webhook with a rather long name to wrap", "url": setup.receiver.url("/c"), "events": ["invoices.*", "job.created", "offer.accepted", "bid.submitted"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    setup.publish().await;
    setup
        .receiver
        .wait_for("/c", 1, std::time::Duration::from_secs(20))
        .await;
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    browser.resize(360, 800).await;
    let pages = [
        "/admin/webhooks".to_owned(),
        "/admin/webhooks/new".to_owned(),
        format!("/admin/webhooks/{id}"),
        "/admin/deliveries".to_owned(),
        "/admin/event-types".to_owned(),
        "/admin/audit-log".to_owned(),
    ];
    for page in &pages {
        browser.open(&setup.api.service.url(page)).await;
        let overflow = browser
            .eval("return document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{page} scrolls sideways at 360 px by {overflow}"
        );
        let unlabelled = browser.eval(LABEL_CHECK).await;
        assert_eq!(
            unlabelled,
            Value::Array(vec![]),
            "{page}: controls without a label"
        );
        let low = browser.eval(CONTRAST_CHECK).await;
        assert_eq!(low, Value::Array(vec![]), "{page}: text below 4.5:1");
    }
    browser.open(&setup.api.service.url("/admin/sign-in")).await;

    // The Add Webhook flow by keyboard alone.
    browser.resize(1280, 900).await;
    browser
        .open(&setup.api.service.url("/admin/webhooks/new"))
        .await;
    let focused = "return document.activeElement && (document.activeElement.id || document.activeElement.value || document.activeElement.textContent)";
    let mut steps = 0;
    while browser.eval(focused).await != "name" {
        browser.keys(TAB).await;
        steps += 1;
        assert!(steps < 30, "the name field is never reached by Tab");
    }
    browser.keys("Keyboard hook").await;
    browser.keys(TAB).await;
    browser.keys(&setup.receiver.url("/k")).await;
    browser.keys(TAB).await;
    browser.keys(TAB).await;
    assert_eq!(
        browser.eval(focused).await,
        "*",
        "the All events box comes next"
    );
    browser.keys(" ").await;
    while browser.eval(focused).await != "Add webhook" {
        browser.keys(TAB).await;
        steps += 1;
        assert!(steps < 120, "the submit button is never reached by Tab");
    }
    browser.keys(ENTER).await;
    browser
        .wait_for_text("will not be shown again", false)
        .await;
}

/// A client that keeps cookies out of it: each request states its own.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn sign_in_links_work_once_and_sessions_follow_the_directory() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    let client = plain_client();
    // A link signs in once and moves on at once to a URL without the token.
    let link = api
        .platform(Method::POST, "acme/users/u1/sign-in-links", None)
        .await;
    let path = url::Url::parse(link.body["url"].as_str().unwrap())
        .unwrap()
        .path()
        .to_owned();
    let token = path.rsplit('/').next().unwrap().to_owned();
    let opened = client.get(api.service.url(&path)).send().await.unwrap();
    assert_eq!(opened.status(), 303);
    assert_eq!(opened.headers()["location"], "/admin");
    assert_eq!(opened.headers()["referrer-policy"], "no-referrer");
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let again = client.get(api.service.url(&path)).send().await.unwrap();
    assert_eq!(again.status(), 401, "single use");
    assert!(
        !api.service.stdout().contains(&token)
            && !api
                .service
                .logs()
                .iter()
                .any(|l| l.to_string().contains(&token)),
        "the token is never logged"
    );
    let page = |session: &str, path: &'static str| {
        let (client, session) = (client.clone(), session.to_owned());
        let url = api.service.url(path);
        async move {
            client
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(page(&session, "/admin/webhooks").await.status(), 200);
    // A new sign-in by link: the session cookie (`zivio_session=...`).
    let signed_in = || api.sign_in_by_link("acme", "u1");
    let sent_to_sign_in = |answer: reqwest::Response| {
        assert_eq!(answer.status(), 303);
        assert_eq!(answer.headers()["location"], "/admin/sign-in");
    };

    // Deactivation ends the session for good: reactivation needs a new sign-in.
    api.put_user("acme", "u1", false, &["admin"]).await;
    sent_to_sign_in(page(&session, "/admin/webhooks").await);
    api.put_user("acme", "u1", true, &["admin"]).await;
    sent_to_sign_in(page(&session, "/admin/webhooks").await);

    // Losing the permission ends the session too; signing in again without it shows the page
    // that says it is needed.
    let session = signed_in().await;
    assert_eq!(page(&session, "/admin/webhooks").await.status(), 200);
    api.put_role("acme", "admin", &["invoices:read:tenant"])
        .await;
    sent_to_sign_in(page(&session, "/admin/webhooks").await);
    let session = signed_in().await;
    let refused = page(&session, "/admin/webhooks").await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("webhooks:manage"));

    // A user without a password cannot sign in, not even with an empty one.
    api.put_user("acme", "nopass", true, &["admin"]).await;
    let empty = api
        .post_sign_in(&[
            ("tenant", "acme"),
            ("email", "nopass@acme.example.com"),
            ("password", ""),
        ])
        .await;
    assert_eq!(empty.status(), 401);

    // Guessing passwords is slowed down per account, however the email is spelled.

    let mut statuses = Vec::new();
    for _ in 0..12 {
        let email = format!("{}u2@ACME.example.com", " ".repeat(statuses.len()));
        let answer = api
            .post_sign_in(&[("tenant", "acme"), ("email", &email), ("password", "guess")])
            .await;
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
}
