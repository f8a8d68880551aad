//! One attempt: sign at send time, POST the stored bytes, read a bounded response, and say
//! what happened in the words of docs/product.md §6 (error kinds with plain details).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use zivio_app::Resolver;
use zivio_core::error_kind::ErrorKind;
use zivio_core::keys::SecretsKey;
use zivio_core::retry::{Verdict, verdict_for_status};
use zivio_core::secret::SigningSecret;
use zivio_core::signing::sign;
use zivio_core::url_policy::{Destination, UrlPolicy, WebhookUrl};
use zivio_store::ClaimedDelivery;

use crate::client::{Refused, Unresolved, resolve_vetted};

/// Responses are kept up to this size; the rest is never read.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
pub const USER_AGENT: &str = "Zivio-Webhooks/1.0";

/// What one attempt did.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub request_headers: Map<String, Value>,
    pub response_status: Option<u16>,
    pub response_headers: Option<Map<String, Value>>,
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    pub duration: Duration,
    pub error_kind: Option<ErrorKind>,
    pub error_detail: Option<String>,
    /// A receiver's `Retry-After` on 429 or 503.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    fn failed(
        kind: ErrorKind,
        detail: String,
        request_headers: Map<String, Value>,
        duration: Duration,
    ) -> Self {
        Outcome {
            verdict: Verdict::Retry,
            request_headers,
            response_status: None,
            response_headers: None,
            response_body: None,
            response_truncated: false,
            duration,
            error_kind: Some(kind),
            error_detail: Some(detail),
            retry_after: None,
        }
    }
}

impl Outcome {
    /// A delivery that waited longer than the operator allows for its webhook's rate limit: it
    /// ends without a request.
    pub fn rate_limited(detail: String) -> Self {
        Outcome {
            verdict: Verdict::GiveUp,
            ..Outcome::failed(ErrorKind::RateLimited, detail, Map::new(), Duration::ZERO)
        }
    }
}

/// How an attempt goes out.
pub struct Route<'a> {
    pub client: &'a reqwest::Client,
    pub secrets_key: &'a SecretsKey,
}

/// A destination that passed the URL policy just now, or the error kind and detail of why it
/// may not be reached.
pub type Vetted = Result<WebhookUrl, (ErrorKind, String)>;

/// Vets `url` again, as at every attempt (even when a pooled connection would skip the
/// resolver): literal addresses by the policy, host names by resolving them now (and again by
/// the client's resolver on every new connection).
pub async fn vet(policy: &UrlPolicy, resolver: &dyn Resolver, url: &str) -> Vetted {
    let url = policy
        .parse(url)
        .map_err(|error| (ErrorKind::RefusedDestination, error.to_string()))?;
    if let Ok(Destination::Name(host)) = url.destination()
        && let Err(error) = resolve_vetted(resolver, policy, &host).await
    {
        let kind = if error.is::<Unresolved>() {
            ErrorKind::Dns
        } else {
            ErrorKind::RefusedDestination
        };
        return Err((kind, error.to_string()));
    }
    Ok(url)
}

/// Signs and sends `delivery` to the `vetted` destination. The caller reads the sealed secret
/// after vetting, so that nothing slow stands between reading the secret and signing with it.
pub async fn send(
    route: &Route<'_>,
    delivery: &ClaimedDelivery,
    vetted: Vetted,
    now: OffsetDateTime,
) -> Outcome {
    let Route {
        client,
        secrets_key,
    } = *route;
    let timestamp = now.unix_timestamp();
    let mut headers = Map::new();
    for (name, value) in [
        ("content-type", "application/json".to_owned()),
        ("user-agent", USER_AGENT.to_owned()),
        ("webhook-id", delivery.event_id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
    ] {
        headers.insert(name.to_owned(), Value::String(value));
    }
    let url = match vetted {
        Ok(url) => url,
        Err((kind, detail)) => return Outcome::failed(kind, detail, headers, Duration::ZERO),
    };
    let request_headers = match signed(&mut headers, delivery, secrets_key, timestamp) {
        Ok(request_headers) => request_headers,
        Err(detail) => return Outcome::failed(ErrorKind::Secret, detail, headers, Duration::ZERO),
    };
    let started = Instant::now();
    let response = client
        .post(url.url().clone())
        .headers(request_headers)
        .body(delivery.body.clone())
        .send()
        .await;
    match response {
        Ok(response) => outcome_of(response, headers, started, now).await,
        Err(error) => {
            let (kind, detail) = classify(&error);
            Outcome::failed(kind, detail, headers, started.elapsed())
        }
    }
}

/// Signs the delivery into `headers` (the request record) and returns the request's headers:
/// those of the record and the webhook's custom headers. `Err`: the secret of the signature
/// or of a custom header cannot be opened.
fn signed(
    headers: &mut Map<String, Value>,
    delivery: &ClaimedDelivery,
    secrets_key: &SecretsKey,
    timestamp: i64,
) -> Result<HeaderMap, String> {
    let secret = SigningSecret::open(
        &delivery.secret_ciphertext,
        secrets_key,
        delivery.webhook_id.as_str(),
    )
    .map_err(|error| format!("{error}; check ZIVIO_WEBHOOKS_SECRETS_KEY"))?;
    let signature = sign(
        &secret,
        delivery.event_id.as_str(),
        timestamp,
        &delivery.body,
    );
    headers.insert("webhook-signature".to_owned(), Value::String(signature));
    let mut request_headers = HeaderMap::new();
    for (name, value) in headers.iter() {
        let value = value.as_str().unwrap_or_default();
        if let (Ok(name), Ok(value)) = (
            name.parse::<reqwest::header::HeaderName>(),
            HeaderValue::from_str(value),
        ) {
            request_headers.insert(name, value);
        }
    }
    add_custom_headers(&mut request_headers, headers, delivery, secrets_key)?;
    Ok(request_headers)
}

/// The outcome of an attempt whose response arrived: its status decides, its body is read up
/// to the bound.
async fn outcome_of(
    mut response: reqwest::Response,
    headers: Map<String, Value>,
    started: Instant,
    now: OffsetDateTime,
) -> Outcome {
    let status = response.status().as_u16();
    let response_headers = header_map(response.headers());
    let retry_after = matches!(status, 429 | 503)
        .then(|| {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| retry_after(v, now))
        })
        .flatten();
    let (body, truncated, read_error) = read_bounded(&mut response).await;
    let duration = started.elapsed();
    let verdict = verdict_for_status(status);
    let (error_kind, error_detail) = match (verdict, status) {
        (Verdict::Delivered, _) => (None, None),
        (_, 300..=399) => (
            Some(ErrorKind::Redirect),
            Some(format!(
                "the receiver answered {status}; redirects are never followed"
            )),
        ),
        _ => (
            Some(ErrorKind::HttpStatus),
            Some(format!("the receiver answered {status}")),
        ),
    };
    if let Some(error) = read_error {
        // The status arrived; a failure while reading the body does not change the outcome.
        tracing::debug!(error = %error, "response body cut short");
    }
    Outcome {
        verdict,
        request_headers: headers,
        response_status: Some(status),
        response_headers: Some(response_headers),
        response_body: Some(body),
        response_truncated: truncated,
        duration,
        error_kind,
        error_detail,
        retry_after,
    }
}

/// The webhook's custom headers, beside the signature headers (their names cannot be reserved,
/// so none replaces a header set above): values on the wire marked sensitive, and in the
/// request record `****` and the hint.
fn add_custom_headers(
    request: &mut HeaderMap,
    record: &mut Map<String, Value>,
    delivery: &ClaimedDelivery,
    secrets_key: &SecretsKey,
) -> Result<(), String> {
    for sealed in &delivery.headers {
        let header = sealed
            .open(secrets_key, &delivery.webhook_id)
            .map_err(|error| {
                format!(
                    "custom header `{}`: {error}; check ZIVIO_WEBHOOKS_SECRETS_KEY",
                    sealed.name
                )
            })?;
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(header.name().as_bytes()),
            HeaderValue::from_str(header.expose()),
        ) else {
            return Err(format!(
                "custom header `{}` is not a valid header",
                sealed.name
            ));
        };
        value.set_sensitive(true);
        request.append(name, value);
        record.insert(header.name().to_owned(), Value::String(sealed.masked()));
    }
    Ok(())
}

/// Reads at most `MAX_RESPONSE_BODY` bytes; an endless body is cut off, never buffered.
async fn read_bounded(response: &mut reqwest::Response) -> (Vec<u8>, bool, Option<reqwest::Error>) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return (body, true, None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, false, None),
            Err(error) => return (body, false, Some(error)),
        }
    }
}

fn header_map(headers: &HeaderMap) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned())
            .and_modify(|existing| {
                if let Value::String(joined) = existing {
                    joined.push_str(", ");
                    joined.push_str(&text);
                }
            })
            .or_insert(Value::String(text.clone()));
    }
    map
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &HeaderValue, now: OffsetDateTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(text, &format)
        .ok()?
        .assume_utc();
    Some((at - now).try_into().unwrap_or(Duration::ZERO))
}

/// The error kind and a plain detail for a request that got no response.
fn classify(error: &reqwest::Error) -> (ErrorKind, String) {
    if let Some(refused) = find::<Refused>(error) {
        return (ErrorKind::RefusedDestination, refused.to_string());
    }
    if let Some(unresolved) = find::<Unresolved>(error) {
        return (ErrorKind::Dns, unresolved.to_string());
    }
    if let Some(tls) = find::<rustls::Error>(error) {
        return (
            ErrorKind::Tls,
            format!("TLS failed: {tls}{}", client_certificate_hint(tls)),
        );
    }
    if error.is_timeout() {
        return (
            ErrorKind::Timeout,
            "no complete answer within the request timeout".to_owned(),
        );
    }
    if error.is_connect() {
        return (
            ErrorKind::Connect,
            format!("could not connect: {}", root_cause(error)),
        );
    }
    (
        ErrorKind::Connection,
        format!("the connection failed: {}", root_cause(error)),
    )
}

/// Alerts received about certificates concern ours: the receiver wants a client certificate.
fn client_certificate_hint(error: &rustls::Error) -> &'static str {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            " (the receiver requires a client certificate: see ZIVIO_WEBHOOKS_CLIENT_CERT)"
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA,
        ) => " (the receiver refused the client certificate offered, or wants one)",
        _ => "",
    }
}

/// The first error of type `T` in a cause chain, looking inside `io::Error`s and boxed errors,
/// which hide their contents from `source()`.
fn find<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        let inner: Option<&(dyn std::error::Error + 'static)> = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if let Some(found) = inner.and_then(find::<T>) {
            return Some(found);
        }
        next = cause.source();
    }
    None
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use zivio_core::custom_header::{HeaderInput, validate};

    use super::*;

    proptest! {
        /// Whatever the validation accepts goes on the wire as it is: the attempt never fails
        /// because a stored header turns out not to be valid HTTP.
        #[test]
        fn accepted_custom_headers_are_valid_http(
            name in "[\\x00-\\x7f]{0,12}|[A-Za-z-]{1,12}",
            value in "[\\x00-\\x7f]{0,24}|[ -~]{1,24}",
        ) {
            if let Ok(headers) = validate(&HeaderInput(vec![(name, value)])) {
                let header = &headers[0];
                prop_assert!(HeaderName::from_bytes(header.name().as_bytes()).is_ok());
                prop_assert!(HeaderValue::from_str(header.expose()).is_ok());
            }
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        let seconds = HeaderValue::from_static("120");
        assert_eq!(retry_after(&seconds, now), Some(Duration::from_secs(120)));
        let date = HeaderValue::from_static("Fri, 27 Nov 2026 10:05:00 GMT");
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(300)));
        let past = HeaderValue::from_static("Fri, 27 Nov 2026 09:00:00 GMT");
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderValue::from_static("soon"), now), None);
    }
}
