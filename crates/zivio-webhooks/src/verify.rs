//! `zivio-webhooks verify`: checks a captured request (headers and raw body) against a signing
//! secret, as a receiver would, and says exactly which check failed. Exit 0 valid, 1 invalid,
//! 2 when the inputs cannot be read. The secret comes from the environment or a file, never
//! from the command line.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use zivio_core::duration;
use zivio_core::secret::SigningSecret;
use zivio_core::signing;

/// The environment variable that holds the `whsec_` secret.
pub const SECRET_VAR: &str = "ZIVIO_WEBHOOK_SECRET";

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The request's headers, one `name: value` per line (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    headers: PathBuf,
    /// The request's raw body, byte for byte (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    body: PathBuf,
    /// A file holding the `whsec_` secret (else the ZIVIO_WEBHOOK_SECRET variable).
    #[arg(long, value_name = "FILE", env = "ZIVIO_WEBHOOK_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// How far `webhook-timestamp` may be from now.
    #[arg(long, default_value = "5m", env = "ZIVIO_WEBHOOK_TOLERANCE")]
    tolerance: String,
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    match check(args) {
        Ok(Ok(summary)) => {
            println!("valid: {summary}");
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            println!("invalid: {reason}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("zivio-webhooks verify: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The verdict (`Ok(summary)` or `Err(reason)`), or why the inputs could not be read.
fn check(args: &VerifyArgs) -> anyhow::Result<Result<String, String>> {
    let secret = read_secret(args.secret_file.as_deref())?;
    let tolerance = duration::parse(&args.tolerance)
        .map_err(|error| anyhow::anyhow!("--tolerance: {error}"))?;
    let headers = String::from_utf8(read(&args.headers)?).context("the headers are not text")?;
    let body = read(&args.body)?;
    let header = |name: &str| {
        headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verdict = signing::verify(
        &secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now,
        i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
    );
    Ok(match verdict {
        Ok(()) => {
            let event_type = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|value| value["type"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned());
            Ok(format!(
                "{} ({event_type})",
                header("webhook-id").unwrap_or_default()
            ))
        }
        Err(reason) => Err(reason.to_string()),
    })
}

pub fn read_secret(file: Option<&Path>) -> anyhow::Result<SigningSecret> {
    let text = match file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the secret file {}", file.display()))?,
        None => std::env::var(SECRET_VAR).map_err(|_| {
            anyhow::anyhow!("set {SECRET_VAR} (or --secret-file) to the webhook's whsec_ secret")
        })?,
    };
    SigningSecret::parse(text.trim())
        .map_err(|error| anyhow::anyhow!("the secret is not valid: {error}"))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
