//! Signing in and out of the admin UI.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zivio_app::AppError;
use zivio_app::sessions::{self, Signed};

use crate::AppState;
use crate::admin::{
    Admin, PageError, PageResult, PublicForm, SessionForm, cleared_cookie, session_cookie,
    session_id, sign_in_cookie, sign_in_nonce,
};

use super::{Layout, see_other, with_status};

pub async fn home(_: Admin) -> Response {
    see_other("/admin/webhooks")
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    tenant: String,
    email: String,
    error: Option<String>,
    token: String,
}

/// The sign-in form with the token of the browser's pre-session value (`nonce`), or of a new
/// one that the answer sets.
fn sign_in_form(
    state: &AppState,
    nonce: Option<String>,
    status: StatusCode,
    tenant: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let (nonce, is_new) = match nonce {
        Some(nonce) => (nonce, false),
        None => (sessions::new_sign_in_nonce(), true),
    };
    let mut page = with_status(
        status,
        &SignInPage {
            layout: Layout::public("Sign in"),
            tenant: tenant.to_owned(),
            email: email.to_owned(),
            error: error.map(str::to_owned),
            token: sessions::sign_in_token(&nonce),
        },
    );
    if is_new {
        page.headers_mut()
            .append(header::SET_COOKIE, sign_in_cookie(state, &nonce));
    }
    page
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(id) = session_id(&headers)
        && let Ok(Some(Signed::Manager(_))) = sessions::resume(&state.services, &id).await
    {
        return see_other("/admin/webhooks");
    }
    sign_in_form(
        &state,
        sign_in_nonce(&state, &headers),
        StatusCode::OK,
        "",
        "",
        None,
    )
}

pub async fn sign_in(
    State(state): State<AppState>,
    PublicForm {
        fields,
        client,
        nonce,
    }: PublicForm,
) -> Response {
    let (tenant, email) = (fields.text("tenant"), fields.text("email"));
    let again = |status: StatusCode, error: &str| {
        sign_in_form(
            &state,
            Some(nonce.clone()),
            status,
            &tenant,
            &email,
            Some(error),
        )
    };
    // The account as sign-in reads it: spaces and case cannot buy fresh attempts.
    let account = format!("{}/{}", tenant.trim(), email.trim()).to_lowercase();
    if !state.sign_in_limiter.allow(&account, client) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a few minutes and try again.",
        );
    }
    match sessions::sign_in_with_password(
        &state.services,
        &tenant,
        &email,
        &fields.text("password"),
    )
    .await
    {
        Ok(id) => signed_in(&state, &id),
        Err(AppError::Unauthenticated(message)) => again(StatusCode::UNAUTHORIZED, message),
        // The password hashing threads are all busy: nothing was checked, nothing is counted.
        Err(AppError::Busy(seconds)) => {
            state.sign_in_limiter.refund(&account, client);
            let mut page = again(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "Too many sign-ins are being checked right now. Try again in {seconds} seconds."
                ),
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            page
        }
        Err(error) => PageError::from(error).into_response(),
    }
}

/// Opening a link signs in and moves on at once to a URL without the token; the token is
/// never sent on as a referrer.
pub async fn sign_in_link(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let mut response = match sessions::sign_in_with_link(&state.services, &token).await {
        Ok(id) => signed_in(&state, &id),
        Err(AppError::Unauthenticated(message)) => sign_in_form(
            &state,
            sign_in_nonce(&state, &headers),
            StatusCode::UNAUTHORIZED,
            "",
            "",
            Some(message),
        ),
        Err(error) => PageError::from(error).into_response(),
    };
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn signed_in(state: &AppState, id: &str) -> Response {
    let mut response = see_other("/admin");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(state, id));
    response
}

pub async fn sign_out(State(state): State<AppState>, form: SessionForm) -> PageResult {
    sessions::sign_out(&state.services, &form.session).await?;
    let mut response = see_other("/admin/sign-in");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie());
    Ok(response)
}
