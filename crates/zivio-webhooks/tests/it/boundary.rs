//! The privilege boundary in the admin UI (docs/product.md §4), route by route: an admin who may
//! manage webhooks but whose access does not cover the owner's sees no bodies, response headers
//! or URL paths, and cannot change the URL, rotate the secret or resend; the owner, on the same
//! pages, can. (The v4 routes are covered in `deliveries.rs` and `webhooks.rs`.)

use reqwest::Method;
use serde_json::json;

use crate::support::api::Backend;
use crate::support::sending::setup;

const PASSWORD: &str = "correct horse battery staple";
/// Part of the webhook URL's path: only admins who cover the owner may see it.
const PATH_SECRET: &str = "path-credential-8d1f";

#[tokio::test]
async fn an_admin_who_does_not_cover_the_owner_sees_no_bodies_and_changes_nothing() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    let path = format!("/hooks/{PATH_SECRET}");
    let body = json!({"name": "erp", "url": setup.receiver.url(&path), "events": ["*"]});
    let created = api.create_webhook(&setup.key, "acme", body).await;
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    let hint = created["webhook"]["secret_hint"].clone();
    let event = setup.publish().await;
    let attempt = setup.attempts(&event, &webhook, 1).await.remove(0);
    assert!(attempt.succeeded);

    api.put_role("acme", "narrow", &["webhooks:manage", "invoices:read:own"])
        .await;
    api.put_user("acme", "narrow", true, &["narrow"]).await;
    for user in ["u1", "narrow"] {
        let answer = api
            .platform(
                Method::PUT,
                &format!("acme/users/{user}/password"),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
    }
    let page = |session: String, path: String| async move {
        let response = reqwest::Client::new()
            .get(api.service.url(&path))
            .header("cookie", format!("zivio_session={session}"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let delivery_page = format!("/admin/deliveries/{}", attempt.id);
    let webhook_page = format!("/admin/webhooks/{webhook}");

    // The owner (all access) sees everything: the control for what follows.
    let owner = api.sign_in("acme", "u1@acme.example.com", PASSWORD).await;
    let (status, text) = page(owner.clone(), delivery_page.clone()).await;
    assert_eq!(status, 200);
    // Bodies as the page shows them (pretty JSON, quotes escaped): the receiver's answer and
    // the event id inside the delivered envelope.
    let quote = if text.contains("&#34;") {
        "&#34;"
    } else {
        "&quot;"
    };
    let response_body = format!("{quote}received{quote}: true");
    let request_body = format!("{quote}id{quote}: {quote}{event}{quote}");
    assert!(text.contains(PATH_SECRET), "{text}");
    assert!(
        text.contains(&response_body) && text.contains(&request_body),
        "{text}"
    );
    assert!(text.contains(&format!("/admin/deliveries/{}/resend", attempt.id)));
    assert!(text.contains("webhook-signature"), "{text}");
    let (_, text) = page(owner, webhook_page.clone()).await;
    assert!(text.contains(PATH_SECRET));

    let narrow = api
        .sign_in("acme", "narrow@acme.example.com", PASSWORD)
        .await;
    let token = zivio_app::sessions::form_token(&narrow);
    let cookie = format!("zivio_session={narrow}");
    let (status, text) = page(narrow.clone(), delivery_page.clone()).await;
    assert_eq!(status, 200, "metadata stays visible");
    assert!(!text.contains(PATH_SECRET), "no URL path");
    assert!(!text.contains(&response_body), "no response body");
    assert!(!text.contains(&request_body), "no request body");
    assert!(
        !text.contains("webhook-signature"),
        "no signature over the body"
    );
    assert!(
        !text.contains("/resend"),
        "no resend form for an admin who may not resend"
    );
    let (status, text) = page(narrow.clone(), webhook_page.clone()).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains(PATH_SECRET),
        "the webhook page shows scheme and host only"
    );
    let (_, text) = page(narrow, format!("/admin/deliveries?webhook_id={webhook}")).await;
    assert!(!text.contains(PATH_SECRET), "nor does the deliveries list");

    // Forms posted anyway (as a crafted request would) are refused and change nothing.
    let received = setup.receiver.received(&path).len();
    let resend = api
        .post_form(
            &format!("/admin/deliveries/{}/resend", attempt.id),
            Some(&cookie),
            &[("_token", token.as_str())],
        )
        .await;
    assert_eq!(resend.status(), 403, "resend");
    let rotate = api
        .post_form(
            &format!("{webhook_page}/rotate"),
            Some(&cookie),
            &[("_token", token.as_str()), ("confirm", "rotate")],
        )
        .await;
    assert_eq!(rotate.status(), 403, "rotate");
    let edit = api
        .post_form(
            &webhook_page,
            Some(&cookie),
            &[
                ("_token", token.as_str()),
                ("name", "erp"),
                ("description", ""),
                ("url", &setup.receiver.url("/elsewhere")),
            ],
        )
        .await;
    assert_eq!(edit.status(), 403, "URL change");

    // A resend, had a refused form caused one, would be queued (pending) or already received.
    assert_eq!(
        api.store().await.pending_deliveries().await.unwrap(),
        0,
        "nothing queued"
    );
    assert_eq!(
        setup.receiver.received(&path).len(),
        received,
        "nothing resent"
    );
    let now = api
        .v4(
            &setup.key,
            "acme",
            Method::GET,
            &format!("/v4/webhooks/{webhook}"),
            None,
        )
        .await;
    assert_eq!(now.body["webhook"]["url"], setup.receiver.url(&path));
    assert_eq!(now.body["webhook"]["secret_hint"], hint, "secret unchanged");
}
