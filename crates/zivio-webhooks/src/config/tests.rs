use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn errors(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
    Config::from_vars(&vars(pairs)).unwrap_err().0
}

#[test]
fn defaults_give_embedded_sqlite_on_localhost() {
    let (config, warnings) = Config::from_vars(&BTreeMap::new()).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.database.backend, Backend::Sqlite);
    assert!(config.database.url.ends_with("zivio-data/zivio.db"));
    assert!(
        config.public_url.is_none(),
        "derived from the bound address at start"
    );
    assert_eq!(config.request_timeout, Duration::from_secs(30));
    assert_eq!(config.retry_schedule.max_attempts(), 10);
    assert_eq!(config.auto_disable_after, Duration::from_secs(5 * 86_400));
    assert_eq!(config.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(config.audit_retention, Duration::from_secs(365 * 86_400));
    assert_eq!(config.lease, Duration::from_secs(30));
    assert_eq!(config.max_webhooks_per_tenant, 100);
    assert_eq!(config.max_in_flight_per_webhook, 16);
    assert_eq!(config.mail_from, "webhooks@localhost");
    assert_eq!(config.rate_limit_ipv6_prefix, 64);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.log_filter, "info");
    assert!(config.bootstrap, "bootstrap defaults on in embedded mode");
    assert!(!config.allow_http);
    assert!(config.platform_keys.is_none() && config.secrets_key.is_none());
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn every_documented_variable_is_read() {
    let key = SecretsKey::from_bytes([1; 32]).to_base64();
    let (config, warnings) = Config::from_vars(&vars(&[
        ("ZIVIO_WEBHOOKS_LISTEN", "0.0.0.0:9000"),
        ("ZIVIO_WEBHOOKS_DATA_DIR", "/var/lib/zivio"),
        ("ZIVIO_WEBHOOKS_DATABASE_URL", "postgres://zivio@db/zivio"),
        (
            "ZIVIO_WEBHOOKS_PLATFORM_KEY",
            "0123456789abcdef,fedcba9876543210",
        ),
        ("ZIVIO_WEBHOOKS_SECRETS_KEY", &key),
        ("ZIVIO_WEBHOOKS_PUBLIC_URL", "https://hooks.example.com"),
        ("ZIVIO_WEBHOOKS_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
        ("ZIVIO_WEBHOOKS_PLATFORM_LISTEN", "127.0.0.1:9100"),
        ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "fd00::/8"),
        ("ZIVIO_WEBHOOKS_ALLOW_HTTP", "true"),
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "10s"),
        ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "1s,1m"),
        ("ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER", "2d"),
        ("ZIVIO_WEBHOOKS_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("ZIVIO_WEBHOOKS_MAIL_FROM", "hooks@example.com"),
        ("ZIVIO_WEBHOOKS_RETENTION", "7d"),
        ("ZIVIO_WEBHOOKS_LOG_FORMAT", "json"),
        ("ZIVIO_WEBHOOKS_LOG", "zivio=debug"),
        ("ZIVIO_WEBHOOKS_LEASE", "1m"),
        ("ZIVIO_WEBHOOKS_MAX_WEBHOOKS_PER_TENANT", "5"),
        ("ZIVIO_WEBHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK", "2"),
        ("ZIVIO_WEBHOOKS_MAX_IN_FLIGHT", "64"),
        ("ZIVIO_WEBHOOKS_RATE_LIMIT_IPV6_PREFIX", "/56"),
        ("ZIVIO_WEBHOOKS_AUDIT_RETENTION", "90d"),
        ("ZIVIO_WEBHOOKS_BOOTSTRAP", "false"),
    ]))
    .unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/zivio"));
    assert_eq!(config.database.backend, Backend::Postgres);
    assert_eq!(config.platform_keys.unwrap().len(), 2);
    assert_eq!(config.secrets_key.unwrap().to_base64(), key);
    assert_eq!(
        config.public_url.unwrap().as_str(),
        "https://hooks.example.com/"
    );
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(config.platform_listen.unwrap().port(), 9100);
    assert_eq!(config.allow_private_cidrs.len(), 1);
    assert!(config.allow_http);
    assert_eq!(config.request_timeout, Duration::from_secs(10));
    assert_eq!(config.retry_schedule.max_attempts(), 3);
    assert_eq!(config.auto_disable_after, Duration::from_secs(2 * 86_400));
    assert_eq!(config.smtp_url.unwrap().port(), Some(2525));
    assert_eq!(config.mail_from, "hooks@example.com");
    assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.log_filter, "zivio=debug");
    assert_eq!(config.lease, Duration::from_secs(60));
    assert_eq!(config.max_webhooks_per_tenant, 5);
    assert_eq!(config.max_in_flight_per_webhook, 2);
    assert_eq!(config.max_in_flight, 64);
    assert_eq!(config.rate_limit_ipv6_prefix, 56);
    assert_eq!(config.audit_retention, Duration::from_secs(90 * 86_400));
    assert!(!config.bootstrap);
    assert_eq!(
        warnings.len(),
        2,
        "risky settings are warned about: {warnings:?}"
    );
}

#[test]
fn invalid_values_name_their_variable() {
    let cases = [
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "banana", "not a duration"),
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "0s", "longer than zero"),
        ("ZIVIO_WEBHOOKS_LISTEN", "localhost", "IP:port"),
        ("ZIVIO_WEBHOOKS_PLATFORM_LISTEN", ":80", "IP:port"),
        ("ZIVIO_WEBHOOKS_DATABASE_URL", "mysql://x", "sqlite://"),
        ("ZIVIO_WEBHOOKS_SECRETS_KEY", "short", "32 bytes"),
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", "tiny", "shorter than 16"),
        ("ZIVIO_WEBHOOKS_PUBLIC_URL", "ftp://x", "https://"),
        (
            "ZIVIO_WEBHOOKS_PUBLIC_URL",
            "https://u:p@x",
            "without credentials",
        ),
        (
            "ZIVIO_WEBHOOKS_TRUSTED_PROXIES",
            "10.0.0.0/33",
            "not a CIDR",
        ),
        (
            "ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS",
            "everything",
            "not a CIDR",
        ),
        ("ZIVIO_WEBHOOKS_ALLOW_HTTP", "maybe", "boolean"),
        (
            "ZIVIO_WEBHOOKS_EXTRA_ROOT_CA",
            "/nonexistent/ca.pem",
            "cannot read",
        ),
        ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "5s,never", "step 2"),
        (
            "ZIVIO_WEBHOOKS_AUTO_DISABLE_AFTER",
            "5 days",
            "not a duration",
        ),
        ("ZIVIO_WEBHOOKS_SMTP_URL", "http://mail", "smtp://"),
        (
            "ZIVIO_WEBHOOKS_MAIL_FROM",
            "a@b\r\nBcc: x@y",
            "email address",
        ),
        ("ZIVIO_WEBHOOKS_RETENTION", "-1d", "not a duration"),
        ("ZIVIO_WEBHOOKS_LOG_FORMAT", "xml", "text or json"),
        ("ZIVIO_WEBHOOKS_LOG", "zivio=loud", "log filter"),
        ("ZIVIO_WEBHOOKS_LEASE", "soon", "not a duration"),
        ("ZIVIO_WEBHOOKS_MAX_WEBHOOKS_PER_TENANT", "0", "at least 1"),
        (
            "ZIVIO_WEBHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK",
            "many",
            "at least 1",
        ),
        ("ZIVIO_WEBHOOKS_AUDIT_RETENTION", "1y", "not a duration"),
        ("ZIVIO_WEBHOOKS_RATE_LIMIT_IPV6_PREFIX", "0", "1 to 128"),
        ("ZIVIO_WEBHOOKS_RATE_LIMIT_IPV6_PREFIX", "129", "1 to 128"),
        ("ZIVIO_WEBHOOKS_RATE_LIMIT_IPV6_PREFIX", "/64x", "1 to 128"),
        ("ZIVIO_WEBHOOKS_BOOTSTRAP", "sometimes", "boolean"),
    ];
    for (variable, value, expected) in cases {
        let found = errors(&[(variable, value)]);
        assert_eq!(found.len(), 1, "{variable}={value}: {found:?}");
        assert_eq!(found[0].variable, variable);
        assert!(
            found[0].message.contains(expected),
            "{variable}={value}: {}",
            found[0].message
        );
    }
}

#[test]
fn all_errors_are_reported_together() {
    let found = errors(&[
        ("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "banana"),
        ("ZIVIO_WEBHOOKS_LOG_FORMAT", "xml"),
    ]);
    assert_eq!(found.len(), 2);
    let text = ConfigErrors(found).to_string();
    assert!(
        text.contains("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT: `banana`"),
        "{text}"
    );
}

#[test]
fn postgres_requires_both_keys() {
    let found = errors(&[("ZIVIO_WEBHOOKS_DATABASE_URL", "postgres://db/zivio")]);
    let names: Vec<_> = found.iter().map(|e| e.variable.as_str()).collect();
    assert_eq!(
        names,
        ["ZIVIO_WEBHOOKS_PLATFORM_KEY", "ZIVIO_WEBHOOKS_SECRETS_KEY"]
    );
    let (config, _) = Config::from_vars(&vars(&[
        ("ZIVIO_WEBHOOKS_DATABASE_URL", "postgres://db/zivio"),
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", "0123456789abcdef"),
        (
            "ZIVIO_WEBHOOKS_SECRETS_KEY",
            &SecretsKey::from_bytes([2; 32]).to_base64(),
        ),
    ]))
    .unwrap();
    assert!(!config.bootstrap, "bootstrap defaults off on PostgreSQL");
    // An empty value counts as unset, here too.
    let found = errors(&[
        ("ZIVIO_WEBHOOKS_DATABASE_URL", "postgres://db/zivio"),
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", " "),
        (
            "ZIVIO_WEBHOOKS_SECRETS_KEY",
            &SecretsKey::from_bytes([2; 32]).to_base64(),
        ),
    ]);
    let names: Vec<_> = found.iter().map(|e| e.variable.as_str()).collect();
    assert_eq!(names, ["ZIVIO_WEBHOOKS_PLATFORM_KEY"]);
}

#[test]
fn unknown_variables_are_warned_about() {
    let (_, warnings) =
        Config::from_vars(&vars(&[("ZIVIO_WEBHOOKS_REQUEST_TIMEOTU", "5s")])).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("ZIVIO_WEBHOOKS_REQUEST_TIMEOTU"));
}

#[test]
fn rust_log_is_honoured_only_without_zivio_log() {
    let (config, _) = Config::from_vars(&vars(&[("RUST_LOG", "warn")])).unwrap();
    assert_eq!(config.log_filter, "warn");
    let (config, _) = Config::from_vars(&vars(&[
        ("RUST_LOG", "warn"),
        ("ZIVIO_WEBHOOKS_LOG", "debug"),
    ]))
    .unwrap();
    assert_eq!(config.log_filter, "debug");
}

#[test]
fn config_files_mirror_the_environment() {
    let parsed = parse_file(
        "# comment\n\nZIVIO_WEBHOOKS_LISTEN = 127.0.0.1:9999\nZIVIO_WEBHOOKS_MAIL_FROM=\"a@b.c\"\n",
    )
    .unwrap();
    assert_eq!(parsed["ZIVIO_WEBHOOKS_LISTEN"], "127.0.0.1:9999");
    assert_eq!(parsed["ZIVIO_WEBHOOKS_MAIL_FROM"], "a@b.c");
    assert_eq!(
        parse_file("nonsense").unwrap_err(),
        "line 1: expected KEY=VALUE"
    );
}

#[test]
fn debug_output_hides_keys() {
    let key = SecretsKey::from_bytes([5; 32]).to_base64();
    let (config, _) = Config::from_vars(&vars(&[
        ("ZIVIO_WEBHOOKS_PLATFORM_KEY", "super-secret-platform-key"),
        ("ZIVIO_WEBHOOKS_SECRETS_KEY", &key),
    ]))
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("super-secret") && !debug.contains(&key));
}

/// docs/api.md's configuration table lists exactly the variables the service reads, each with
/// the default it has here: the table and the code cannot drift apart.
#[test]
fn the_documented_configuration_table_matches_the_variables() {
    let doc = include_str!("../../../../docs/api.md");
    let section = doc
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("### Variables of the command-line tools").next())
        .expect("docs/api.md has its configuration section");
    let mut documented = BTreeMap::new();
    for row in section
        .lines()
        .filter(|line| line.starts_with("| `ZIVIO_WEBHOOKS_"))
    {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        for name in cells[0]
            .split('`')
            .filter_map(|part| part.strip_prefix(PREFIX))
        {
            documented.insert(name.to_owned(), cells[1].to_owned());
        }
    }
    let names: Vec<&str> = VARIABLES.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        documented.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted
        },
        "the table lists exactly VARIABLES"
    );
    for (name, default) in VARIABLES {
        let cell = &documented[*name];
        match default {
            Some("") => assert!(cell.starts_with("empty"), "{name}: `{cell}`"),
            Some(value) => assert!(cell.contains(&format!("`{value}`")), "{name}: `{cell}`"),
            None => {}
        }
    }
}
