use super::*;

#[test]
fn sign_in_attempts_are_limited_per_account_and_address() {
    let limiter = SignInLimiter::default();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..PER_ACCOUNT {
        assert!(limiter.allow("acme/a@x", Some(ip)));
    }
    assert!(
        !limiter.allow("acme/a@x", Some(ip)),
        "the account is over its limit"
    );
    assert!(
        limiter.allow("acme/b@x", Some(ip)),
        "another account still may"
    );
    for _ in 0..PER_ADDRESS {
        limiter.allow("acme/c@x", Some(ip));
    }
    assert!(
        !limiter.allow("acme/d@x", Some(ip)),
        "the address is over its limit"
    );
}

#[test]
fn attempts_never_checked_are_given_back() {
    let limiter = SignInLimiter::default();
    let ip: IpAddr = "192.0.2.2".parse().unwrap();
    while limiter.allow("acme/busy@x", Some(ip)) {}
    limiter.refund("acme/busy@x", Some(ip));
    assert!(limiter.allow("acme/busy@x", Some(ip)), "one given back");
    assert!(!limiter.allow("acme/busy@x", Some(ip)));
}

#[test]
fn the_session_cookie_is_found_among_others() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("a=1; zivio_session=abc; b=2"),
    );
    assert_eq!(session_id(&headers).as_deref(), Some("abc"));
    headers.insert(header::COOKIE, HeaderValue::from_static("zivio_session="));
    assert_eq!(session_id(&headers), None);
}
