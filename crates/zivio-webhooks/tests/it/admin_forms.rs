//! The admin UI's forms in a real browser against the real binary: a refused edit keeps what was
//! typed; custom headers, a rate limit and a recovery are set, shown and followed.

use reqwest::Method;
use serde_json::json;

use crate::admin_ui::{PASSWORD, prepared, sign_in};
use crate::support::api::Backend;
use crate::support::eventually;
use crate::support::sending::setup;

#[tokio::test]
async fn a_refused_edit_keeps_what_was_typed() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let answer = setup
        .api
        .platform(
            Method::PUT,
            "acme/users/u1/password",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(answer.status, 204);
    let body = json!({"name": "before", "url": setup.receiver.url("/e"), "events": ["*"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let id = created["webhook"]["id"].as_str().unwrap();
    let session = setup
        .api
        .sign_in("acme", "u1@acme.example.com", PASSWORD)
        .await;
    let token = zivio_app::sessions::form_token(&session);
    let refused = setup
        .api
        .post_form(
            &format!("/admin/webhooks/{id}"),
            Some(&format!("zivio_session={session}")),
            &[
                ("_token", token.as_str()),
                ("name", "renamed <b>"),
                ("description", "typed text"),
                ("url", "http://10.0.0.1/internal"),
                ("events_shown", "1"),
                ("events", "invoices.*"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(
        page.contains("value=\"http://10.0.0.1/internal\""),
        "the typed URL is kept"
    );
    assert!(
        page.contains("value=\"renamed &#60;b&#62;\"")
            || page.contains("value=\"renamed &lt;b&gt;\""),
        "the typed name, escaped"
    );
    assert!(page.contains("typed text</textarea>"));
    assert!(
        page.contains("value=\"invoices.*\" checked"),
        "the typed events are kept"
    );
    assert!(
        page.contains("id=\"url-error\""),
        "the reason is shown by the field"
    );
    let webhook = setup
        .api
        .v4(
            &setup.key,
            "acme",
            Method::GET,
            &format!("/v4/webhooks/{id}"),
            None,
        )
        .await;
    assert_eq!(
        webhook.body["webhook"]["name"], "before",
        "nothing was saved"
    );
}

#[tokio::test]
async fn custom_headers_are_set_in_the_forms_and_shown_as_names_and_hints() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    const TOKEN: &str = "tok-0123456789-ABCD";
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    browser
        .open(&setup.api.service.url("/admin/webhooks/new"))
        .await;
    browser.type_into("#name", "Gateway").await;
    browser.type_into("#url", &setup.receiver.url("/gw")).await;
    browser.click("input[value='*']").await;
    browser
        .type_into(
            "#headers",
            &format!("Authorization: Bearer {TOKEN}\nHost: evil.example"),
        )
        .await;
    browser.click("form button.primary").await;
    browser
        .wait_for_text("cannot be a custom header", false)
        .await;
    assert!(
        !browser.source().await.contains(TOKEN),
        "values are never shown again, not even after an error"
    );

    browser
        .type_into(
            "#headers",
            &format!("Authorization: Bearer {TOKEN}\nX-Api-Key: k1"),
        )
        .await;
    browser.click("form button.primary").await;
    browser.wait_for_url(|url| url.ends_with("/secret")).await;
    let secret_page = browser.url().await;
    browser.open(&secret_page).await;
    let shown = browser.text_of("#custom-headers").await;
    assert_eq!(shown, "Authorization: ****ABCD X-Api-Key: ****");
    assert!(!browser.source().await.contains(TOKEN));

    // A test event carries them.
    browser.click("form[action$='/test'] button").await;
    let received = setup
        .receiver
        .wait_for("/gw", 1, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );

    // The edit form replaces them, then removes them all.
    browser.wait_for_text("succeeded", true).await;
    browser
        .type_into("#headers", "X-Gateway-Key: key-abcdefghij-9876")
        .await;
    browser
        .click("form.stack:has(input[name=clear_headers]) button.primary")
        .await;
    browser.wait_for_url(|url| !url.contains("?test=")).await;
    assert_eq!(
        browser.text_of("#custom-headers").await,
        "X-Gateway-Key: ****9876"
    );
    browser.click("input[name=clear_headers]").await;
    browser
        .click("form.stack:has(input[name=clear_headers]) button.primary")
        .await;
    browser
        .wait_for_text_of("#custom-headers", "None", false)
        .await;
}

#[tokio::test]
async fn a_rate_limit_is_set_in_the_forms_and_shown() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    browser
        .open(&setup.api.service.url("/admin/webhooks/new"))
        .await;
    browser.type_into("#name", "Paced").await;
    browser
        .type_into("#url", &setup.receiver.url("/paced"))
        .await;
    browser.click("input[value='*']").await;
    browser.type_into("#rate_limit", "20000").await;
    browser.click("form button.primary").await;
    browser.wait_for_text("from 1 to 10000", false).await;

    browser.type_into("#rate_limit", "3").await;
    browser.click("form button.primary").await;
    browser.wait_for_url(|url| url.ends_with("/secret")).await;
    let page = browser.url().await;
    browser.open(&page).await;
    assert_eq!(
        browser.text_of("#rate-limit").await,
        "3 requests per second"
    );

    // The edit form changes it, and an empty box removes it.
    browser.type_into("#rate_limit", "").await;
    browser
        .click("form.stack:has(input[name=clear_headers]) button.primary")
        .await;
    browser.wait_for_text_of("#rate-limit", "None", false).await;
}

#[tokio::test]
async fn a_recovery_is_counted_confirmed_and_followed_in_the_browser() {
    let Some((setup, browser)) = prepared().await else {
        return;
    };
    setup
        .receiver
        .script("/rec", &[crate::support::receiver::Reply::Status(400); 3]);
    let (webhook, _) = setup.webhook("/rec").await;
    for _ in 0..3 {
        setup.publish().await;
    }
    setup
        .receiver
        .wait_for("/rec", 3, std::time::Duration::from_secs(20))
        .await;
    sign_in(&setup, &browser, "u1@acme.example.com").await;
    let page = setup.api.service.url(&format!("/admin/webhooks/{webhook}"));
    let since = time::OffsetDateTime::now_utc() - time::Duration::HOUR;
    let since = since
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]"
        ))
        .unwrap();
    let set_since = format!("document.querySelector('#since').value = '{since}'");
    // Failures are recorded a moment after they arrive: count until all three are.
    let within = std::time::Duration::from_secs(20);
    eventually(within, "a count of 3", || async {
        browser.open(&page).await;
        browser.eval(&set_since).await;
        browser.click("button[value=count]").await;
        browser.wait_for_text("would be resent", false).await;
        let count = browser.text_of("#recover-count").await;
        if count == "3 events would be resent." {
            Ok(())
        } else {
            Err(count)
        }
    })
    .await;
    browser.click("button[value=start]").await;
    browser
        .wait_for_text("Tick the box to confirm", false)
        .await;
    browser.click("#recover input[name=confirm]").await;
    browser.click("button[value=start]").await;
    browser.wait_for_url(|url| url.ends_with("#recover")).await;
    browser
        .wait_for_text_of("#recoveries .recovery-progress", "3 of 3 resent", true)
        .await;
    setup
        .receiver
        .wait_for("/rec", 6, std::time::Duration::from_secs(20))
        .await;
}
