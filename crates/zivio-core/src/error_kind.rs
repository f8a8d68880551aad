//! Why an attempt failed, in the words of the API's `error_kind` (docs/api.md): each kind has
//! one stable name, stored with the attempt and shown to admins.

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No complete answer within the request timeout.
    Timeout,
    /// The host name could not be resolved.
    Dns,
    /// No connection could be made.
    Connect,
    /// The connection broke before an answer came.
    Connection,
    /// The TLS handshake failed.
    Tls,
    /// The URL policy refused the destination (a private address, plain http).
    RefusedDestination,
    /// The receiver answered 3xx; redirects are never followed.
    Redirect,
    /// The receiver answered with an error status.
    HttpStatus,
    /// The delivery waited longer than allowed for its webhook's rate limit; no request was made.
    RateLimited,
    /// A secret (signing key or custom header) could not be opened with the secrets key.
    Secret,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::Dns,
        ErrorKind::Connect,
        ErrorKind::Connection,
        ErrorKind::Tls,
        ErrorKind::RefusedDestination,
        ErrorKind::Redirect,
        ErrorKind::HttpStatus,
        ErrorKind::RateLimited,
        ErrorKind::Secret,
    ];

    /// The name in the API, the log, metrics and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Connection => "connection",
            ErrorKind::Tls => "tls",
            ErrorKind::RefusedDestination => "refused_destination",
            ErrorKind::Redirect => "redirect",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Secret => "secret",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Whether the failure says something of the receiver (health, auto-disable): a delivery
    /// its own rate limit held back too long does not.
    pub fn counts_toward_health(self) -> bool {
        self != ErrorKind::RateLimited
    }

    /// The kind in plain words, for admins.
    pub fn in_plain_words(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "The receiver did not answer within the request timeout.",
            ErrorKind::Dns => "The host name could not be resolved.",
            ErrorKind::Connect => "No connection could be made to the receiver.",
            ErrorKind::Connection => "The connection broke before an answer came.",
            ErrorKind::Tls => "The TLS handshake failed (certificate or protocol).",
            ErrorKind::RefusedDestination => {
                "The URL policy refused the address the host resolved to."
            }
            ErrorKind::Redirect => {
                "The receiver answered with a redirect, which is never followed."
            }
            ErrorKind::HttpStatus => "The receiver answered with an error status.",
            ErrorKind::RateLimited => {
                "The delivery waited longer than allowed for the webhook's rate limit; no request was made."
            }
            ErrorKind::Secret => "A secret could not be opened with the service's secrets key.",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name_and_names_are_distinct() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|kind| kind.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::parse("teapot"), None);
    }

    #[test]
    fn only_a_rate_limit_wait_says_nothing_of_the_receiver() {
        for kind in ErrorKind::ALL {
            assert_eq!(
                kind.counts_toward_health(),
                kind != ErrorKind::RateLimited,
                "{kind}"
            );
        }
    }
}
