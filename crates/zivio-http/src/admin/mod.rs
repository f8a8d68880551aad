//! The admin UI under `/admin` (docs/product.md §8): server-rendered pages (askama templates,
//! compiled in and escaping everything), a stylesheet and one small script served from the
//! binary, sessions in the store, and forms protected against cross-site requests twice over:
//! `Sec-Fetch-Site`/`Origin` must name this site, and every form carries a token derived from
//! the session. Pages call the same use cases as the v4 API, so the privilege boundary is the
//! same.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use zivio_app::sessions::{self, Signed};
use zivio_app::{AppError, Caller};

use crate::AppState;
use crate::limits::RateLimiter;

mod pages;

pub const SESSION_COOKIE: &str = "zivio_session";
/// The sign-in form's pre-session cookie (see [`PublicForm`]).
pub const SIGN_IN_COOKIE: &str = "zivio_sign_in";
/// Its name when the service is served over https.
pub const SECURE_SIGN_IN_COOKIE: &str = "__Host-zivio_sign_in";

/// Content-Security-Policy of every page: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(pages::sign_in::home))
        .route("/admin/", get(pages::sign_in::home))
        .route(
            "/admin/sign-in",
            get(pages::sign_in::sign_in_page).post(pages::sign_in::sign_in),
        )
        .route(
            "/admin/sign-in/link/{token}",
            get(pages::sign_in::sign_in_link),
        )
        .route("/admin/sign-out", post(pages::sign_in::sign_out))
        .route(
            "/admin/webhooks",
            get(pages::webhook_pages::webhooks).post(pages::webhook_forms::create_webhook),
        )
        .route(
            "/admin/webhooks/new",
            get(pages::webhook_forms::new_webhook),
        )
        .route(
            "/admin/webhooks/{id}",
            get(pages::webhook_pages::webhook).post(pages::webhook_forms::update_webhook),
        )
        .route(
            "/admin/webhooks/{id}/secret",
            get(pages::webhook_pages::secret),
        )
        .route(
            "/admin/webhooks/{id}/rotate",
            post(pages::webhook_pages::rotate),
        )
        .route(
            "/admin/webhooks/{id}/disable",
            post(pages::webhook_pages::disable),
        )
        .route(
            "/admin/webhooks/{id}/enable",
            post(pages::webhook_pages::enable),
        )
        .route(
            "/admin/webhooks/{id}/delete",
            post(pages::webhook_pages::delete),
        )
        .route(
            "/admin/webhooks/{id}/test",
            post(pages::webhook_pages::send_test),
        )
        .route(
            "/admin/webhooks/{id}/recover",
            post(pages::recovery_pages::recover),
        )
        .route(
            "/admin/webhooks/{id}/recoveries/{recovery_id}/cancel",
            post(pages::recovery_pages::cancel),
        )
        .route("/admin/deliveries", get(pages::delivery_pages::deliveries))
        .route(
            "/admin/deliveries/{id}",
            get(pages::delivery_pages::delivery),
        )
        .route(
            "/admin/deliveries/{id}/resend",
            post(pages::delivery_pages::resend),
        )
        .route("/admin/event-types", get(pages::event_types::event_types))
        .route("/admin/audit-log", get(pages::audit_log::audit_log))
        .route(
            "/admin/receiver-guide",
            get(pages::event_types::receiver_guide),
        )
        .route("/admin/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(page_headers))
}

/// Every admin answer: never cached, never framed, no sniffing, a strict CSP.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-store"));
    response
}

/// The stylesheet and the script, compiled into the binary. Their names carry no hash, so they
/// are cached for an hour only.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "admin.css" => (
            include_bytes!("../../assets/admin.css"),
            "text/css; charset=utf-8",
        ),
        "admin.js" => (
            include_bytes!("../../assets/admin.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, Html("Not found")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page's error, as a page: 401 sends the browser to sign in, the rest render the error page.
pub(crate) struct PageError(AppError);

impl From<AppError> for PageError {
    fn from(error: AppError) -> Self {
        PageError(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            AppError::Unauthenticated(_) => return Redirect::to("/admin/sign-in").into_response(),
            AppError::Forbidden(message) | AppError::Conflict(message) => (
                if matches!(self.0, AppError::Forbidden(_)) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::CONFLICT
                },
                message.clone(),
            ),
            AppError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                format!("This {what} does not exist."),
            ),
            AppError::Validation(errors) | AppError::BadRequest(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AppError::RateLimited(seconds) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many requests; try again in {seconds} s."),
            ),
            AppError::Busy(seconds) => {
                let mut page = pages::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("The service is busy right now; try again in {seconds} s."),
                );
                page.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
                return page;
            }
            AppError::InvalidParameter(error) => (
                StatusCode::BAD_REQUEST,
                format!("{}: {}", error.field, error.message),
            ),
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable; try again shortly.".to_owned(),
                )
            }
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "admin page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side.".to_owned(),
                )
            }
        };
        pages::error_page(status, &message)
    }
}

pub(crate) type PageResult<T = Response> = Result<T, PageError>;

fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The sign-in form's pre-session value from its cookie, if the browser sent a well-formed one.
pub(crate) fn sign_in_nonce(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, sign_in_cookie_name(state)).filter(|nonce| sessions::is_sign_in_nonce(nonce))
}

/// Over https the cookie is `__Host-` prefixed: browsers then accept it only from this very
/// host, over https, for the whole site, so a sibling subdomain or a plain-http page cannot
/// plant a value of its own.
fn sign_in_cookie_name(state: &AppState) -> &'static str {
    if state.services.settings.public_url.scheme() == "https" {
        SECURE_SIGN_IN_COOKIE
    } else {
        SIGN_IN_COOKIE
    }
}

/// The pre-session cookie of the sign-in form: sent only by same-site requests.
pub(crate) fn sign_in_cookie(state: &AppState, nonce: &str) -> HeaderValue {
    let attributes = if state.services.settings.public_url.scheme() == "https" {
        "Path=/; Secure"
    } else {
        "Path=/admin"
    };
    HeaderValue::from_str(&format!(
        "{}={nonce}; {attributes}; HttpOnly; SameSite=Strict; Max-Age=86400",
        sign_in_cookie_name(state)
    ))
    .expect("nonces are cookie-safe")
}

/// The cookie that carries a new session: script cannot read it, other sites' requests do not
/// send it on POST, and over https only when the service is served over https.
pub(crate) fn session_cookie(state: &AppState, id: &str) -> HeaderValue {
    let secure = if state.services.settings.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let max_age = sessions::ABSOLUTE_TIMEOUT.as_secs();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("session ids are cookie-safe")
}

pub(crate) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("zivio_session=; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// A signed-in manager: the session as of now. Without a session the browser goes to sign in;
/// a user without `webhooks:manage` gets the page that says so.
pub(crate) struct Admin {
    pub caller: Caller,
    pub session: String,
}

impl Admin {
    pub fn form_token(&self) -> String {
        sessions::form_token(&self.session)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(session) = session_id(&parts.headers) else {
            return Err(Redirect::to("/admin/sign-in").into_response());
        };
        match sessions::resume(&state.services, &session).await {
            Ok(Some(Signed::Manager(caller))) => {
                tracing::Span::current().record("tenant", caller.tenant.as_str());
                Ok(Admin { caller, session })
            }
            Ok(Some(Signed::WithoutPermission { .. })) => {
                Err(pages::no_permission(&sessions::form_token(&session)))
            }
            Ok(None) => Err(Redirect::to("/admin/sign-in").into_response()),
            Err(error) => Err(PageError(error).into_response()),
        }
    }
}

/// The fields of a submitted form, in order (a field may repeat, such as `events`).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// A state-changing form of a signed-in manager: same-site, with the session's form token.
pub(crate) struct AdminForm {
    pub admin: Admin,
    pub fields: Fields,
}

impl FromRequest<AppState> for AdminForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        if is_cross_site(&parts, &public_origin(state)) {
            return Err(cross_site_refused());
        }
        let admin = Admin::from_request_parts(&mut parts, state).await?;
        let fields = read_fields(Request::from_parts(parts, body), state).await?;
        if !token_matches(&fields, &admin.session) {
            return Err(stale_form());
        }
        Ok(AdminForm { admin, fields })
    }
}

/// A form of any signed-in user (signing out): same-site, with the session's form token.
pub(crate) struct SessionForm {
    pub session: String,
}

impl FromRequest<AppState> for SessionForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        if is_cross_site(&parts, &public_origin(state)) {
            return Err(cross_site_refused());
        }
        let Some(session) = session_id(&parts.headers) else {
            return Err(Redirect::to("/admin/sign-in").into_response());
        };
        let fields = read_fields(Request::from_parts(parts, body), state).await?;
        if !token_matches(&fields, &session) {
            return Err(stale_form());
        }
        Ok(SessionForm { session })
    }
}

/// Whether the form carries the session's token.
fn token_matches(fields: &Fields, session: &str) -> bool {
    let token = fields.get("_token").unwrap_or_default();
    constant_time_eq(token.as_bytes(), sessions::form_token(session).as_bytes())
}

fn stale_form() -> Response {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this site. Go back, reload the page and try again.",
    )
}

/// A form that needs no session (signing in): same-site only, and carrying the token of the
/// pre-session cookie that the form's page set (double submit: a cross-site form cannot know
/// it, even from a browser that sends neither `Sec-Fetch-Site` nor `Origin`). Knows the
/// client's address.
pub(crate) struct PublicForm {
    pub fields: Fields,
    pub client: Option<IpAddr>,
    pub nonce: String,
}

impl FromRequest<AppState> for PublicForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        if is_cross_site(&parts, &public_origin(state)) {
            return Err(cross_site_refused());
        }
        let client = client_ip(
            &parts.headers,
            parts.extensions.get::<ConnectInfo<SocketAddr>>(),
            state,
        );
        let Some(nonce) = sign_in_nonce(state, &parts.headers) else {
            return Err(stale_form());
        };
        let fields = read_fields(Request::from_parts(parts, body), state).await?;
        let token = fields.get("_token").unwrap_or_default();
        if !constant_time_eq(token.as_bytes(), sessions::sign_in_token(&nonce).as_bytes()) {
            return Err(stale_form());
        }
        Ok(PublicForm {
            fields,
            client,
            nonce,
        })
    }
}

async fn read_fields(request: Request, state: &AppState) -> Result<Fields, Response> {
    let bytes = axum::body::Bytes::from_request(request, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Fields(
        url::form_urlencoded::parse(&bytes).into_owned().collect(),
    ))
}

/// Browsers say where a request comes from (`Sec-Fetch-Site`, or at least `Origin`): a POST
/// from another site is refused before anything else happens.
fn is_cross_site(parts: &Parts, public_origin: &str) -> bool {
    if parts.method != Method::POST {
        return false;
    }
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return !matches!(site, "same-origin" | "none");
    }
    if let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        // This site is the public URL's origin, or (without a proxy) the host asked for.
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        let same = origin_host == host || origin == public_origin;
        return origin == "null" || !same;
    }
    false
}

/// `scheme://host[:port]` of `ZIVIO_WEBHOOKS_PUBLIC_URL`.
fn public_origin(state: &AppState) -> String {
    state
        .services
        .settings
        .public_url
        .origin()
        .ascii_serialization()
}

fn cross_site_refused() -> Response {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "Cross-site form submissions are refused. Use the form on this site.",
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not one.
pub(crate) fn client_ip(
    parts_headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
    state: &AppState,
) -> Option<IpAddr> {
    let peer = peer.map(|ConnectInfo(addr)| addr.ip())?;
    let trusted = |ip: &IpAddr| state.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = parts_headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

/// Sign-in attempts allowed per account and per client address (10 and 30 in 5 minutes, then
/// one more every 30 and 10 seconds): guessing passwords stays slow. IPv6 addresses count per
/// prefix (`RATE_LIMIT_IPV6_PREFIX`); accounts are kept as fixed-size digests.
pub struct SignInLimiter {
    accounts: RateLimiter,
    addresses: RateLimiter,
    ipv6_prefix: u8,
}

const PER_ACCOUNT: u32 = 10;
const PER_ADDRESS: u32 = 30;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(5 * 60);

impl Default for SignInLimiter {
    fn default() -> Self {
        Self::new(crate::limits::DEFAULT_IPV6_PREFIX)
    }
}

impl SignInLimiter {
    pub fn new(ipv6_prefix: u8) -> Self {
        let window = SIGN_IN_WINDOW.as_secs_f64();
        SignInLimiter {
            accounts: RateLimiter::new(f64::from(PER_ACCOUNT) / window, PER_ACCOUNT),
            addresses: RateLimiter::new(f64::from(PER_ADDRESS) / window, PER_ADDRESS),
            ipv6_prefix,
        }
    }

    /// Counts an attempt; `false` when the address or the account is over its limit. An
    /// address over its limit does not get to spend account budgets.
    pub(crate) fn allow(&self, account: &str, address: Option<IpAddr>) -> bool {
        if let Some(ip) = address
            && self
                .addresses
                .take(&crate::limits::address_bucket(ip, self.ipv6_prefix))
                .is_err()
        {
            return false;
        }
        self.accounts.take(account.to_lowercase().as_str()).is_ok()
    }

    /// Gives back what [`Self::allow`] took for an attempt that was never checked (hashing was
    /// busy): a flood that keeps the hashing threads busy must not use up real users' attempts.
    pub(crate) fn refund(&self, account: &str, address: Option<IpAddr>) {
        if let Some(ip) = address {
            self.addresses
                .refund(&crate::limits::address_bucket(ip, self.ipv6_prefix));
        }
        self.accounts.refund(account.to_lowercase().as_str());
    }
}

#[cfg(test)]
mod tests;
