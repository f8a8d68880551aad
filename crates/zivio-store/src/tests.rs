use super::*;

#[test]
fn backend_follows_the_scheme() {
    assert_eq!(backend_of("sqlite://x.db"), Some(Backend::Sqlite));
    assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
    assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
    assert_eq!(backend_of("mysql://u@h/db"), None);
    assert_eq!(backend_of("nothing"), None);
}

#[test]
fn redaction_hides_passwords_only() {
    assert_eq!(
        redact_url("postgres://zivio:hunter2@db:5432/zivio"),
        "postgres://zivio:redacted@db:5432/zivio"
    );
    assert_eq!(redact_url("postgres://db/zivio"), "postgres://db/zivio");
    assert!(!redact_url("::hunter2").contains("hunter2"));
}
