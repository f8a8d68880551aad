//! Command-line tools that talk to a running service through its platform API (never to the
//! database behind its back): publish an event, apply a directory file, manage API keys,
//! passwords and sign-in links. The service URL and the platform key come from the
//! environment (or the key from the data directory), never from the command line.

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use zivio_core::catalog::Catalog;

/// Where the service is and how to authenticate; shared by every platform tool.
#[derive(clap::Args)]
pub struct Target {
    /// Base URL of the service's platform API.
    #[arg(
        long,
        env = "ZIVIO_WEBHOOKS_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Data directory holding `platform.key` (used when ZIVIO_WEBHOOKS_PLATFORM_KEY is unset).
    #[arg(long, env = "ZIVIO_WEBHOOKS_DATA_DIR", default_value = "./zivio-data")]
    data_dir: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum DirectoryCommand {
    /// Create or update the tenants, roles and users of a JSON file (idempotent).
    Apply {
        /// `{"tenants": [{"id", "name", "roles": [{"name", "permissions"}], "users": [{"id", "email", "name", "active", "placement", "roles"}]}]}`
        file: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Issue an API key for a user; it is printed once.
    Create(UserRef),
    /// List a user's API keys (never the keys themselves).
    List(UserRef),
    /// Revoke one of a user's API keys.
    Revoke {
        #[command(flatten)]
        user: UserRef,
        /// The key's id (`key_...`).
        id: String,
    },
}

#[derive(clap::Subcommand)]
pub enum PasswordCommand {
    /// Set a user's admin UI password, read from ZIVIO_WEBHOOKS_NEW_PASSWORD or the first line
    /// of standard input.
    Set(UserRef),
}

#[derive(clap::Args)]
pub struct UserRef {
    /// The tenant's id.
    #[arg(long, env = "ZIVIO_TENANT")]
    tenant: String,
    /// The user's id.
    #[arg(long)]
    user: String,
}

#[derive(clap::Args)]
pub struct EmitArgs {
    /// The event type; its catalog example is the resource's data unless --file is given.
    event_type: String,
    /// The tenant to publish to.
    #[arg(long, env = "ZIVIO_TENANT")]
    tenant: String,
    /// A JSON file with the resource's data.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The resource's id (default: the data's `id`).
    #[arg(long)]
    resource_id: Option<String>,
    /// The resource's business unit (placement decides who may see it).
    #[arg(long)]
    business_unit: Option<String>,
    /// The resource's division.
    #[arg(long)]
    division: Option<String>,
    /// The resource's department.
    #[arg(long)]
    department: Option<String>,
    /// A user who owns the resource (repeat for several).
    #[arg(long = "owner", value_name = "USER_ID")]
    owners: Vec<String>,
    /// Producer idempotency key.
    #[arg(long)]
    key: Option<String>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let key = match std::env::var("ZIVIO_WEBHOOKS_PLATFORM_KEY") {
            // Several keys may be configured for rotation; any one of them works.
            Ok(keys) => keys.split(',').next().unwrap_or_default().trim().to_owned(),
            Err(_) => {
                let path = target.data_dir.join("platform.key");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "set ZIVIO_WEBHOOKS_PLATFORM_KEY, or point ZIVIO_WEBHOOKS_DATA_DIR at the service's data directory ({} is not readable)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: target.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// Sends one request to `/platform/v4/tenants/<path>`; a refusal becomes an error naming
    /// what the service said.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/platform/v4/tenants/{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = value["detail"].as_str().unwrap_or(text.as_str());
            let errors = value["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .map(|e| {
                            format!(
                                "\n  {}: {}",
                                e["field"].as_str().unwrap_or("?"),
                                e["message"].as_str().unwrap_or("?")
                            )
                        })
                        .collect::<String>()
                })
                .unwrap_or_default();
            bail!("{method} {path}: {status}: {detail}{errors}");
        }
        Ok(value)
    }
}

pub async fn emit(target: &Target, args: &EmitArgs) -> anyhow::Result<()> {
    let data: Value = match &args.file {
        Some(file) => serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
        )
        .with_context(|| format!("{} is not JSON", file.display()))?,
        None => Catalog::builtin()
            .event_type(&args.event_type)
            .with_context(|| {
                format!(
                    "`{}` is not an event type of the catalog (see GET /v4/event-types)",
                    args.event_type
                )
            })?
            .example
            .clone(),
    };
    let resource_id = match &args.resource_id {
        Some(id) => id.clone(),
        None => match &data["id"] {
            Value::String(id) => id.clone(),
            Value::Number(id) => id.to_string(),
            _ => bail!("the data has no `id`: give --resource-id"),
        },
    };
    let mut event = json!({
        "type": args.event_type,
        "resource": {
            "id": resource_id,
            "placement": {"business_unit": args.business_unit, "division": args.division, "department": args.department},
            "owner_ids": args.owners,
            "data": data,
        },
    });
    if let Some(key) = &args.key {
        event["key"] = json!(key);
    }
    let client = Client::new(target)?;
    let answer = client
        .call(
            Method::POST,
            &format!("{}/events", args.tenant),
            Some(event),
        )
        .await?;
    println!("{}", answer["id"].as_str().unwrap_or_default());
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    tenants: Vec<TenantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    id: String,
    name: String,
    #[serde(default)]
    roles: Vec<RoleEntry>,
    #[serde(default)]
    users: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    name: String,
    permissions: Vec<String>,
}

pub async fn directory(target: &Target, command: &DirectoryCommand) -> anyhow::Result<()> {
    let DirectoryCommand::Apply { file } = command;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let directory: DirectoryFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a directory file", file.display()))?;
    let client = Client::new(target)?;
    let (mut roles, mut users) = (0, 0);
    for tenant in &directory.tenants {
        client
            .call(Method::PUT, &tenant.id, Some(json!({"name": tenant.name})))
            .await?;
        for role in &tenant.roles {
            client
                .call(
                    Method::PUT,
                    &format!("{}/roles/{}", tenant.id, role.name),
                    Some(json!({"permissions": role.permissions})),
                )
                .await?;
            roles += 1;
        }
        for user in &tenant.users {
            let mut user = user.clone();
            let id = user
                .as_object_mut()
                .and_then(|fields| fields.remove("id"))
                .and_then(|id| id.as_str().map(str::to_owned))
                .with_context(|| format!("a user of tenant {} has no `id`", tenant.id))?;
            client
                .call(
                    Method::PUT,
                    &format!("{}/users/{id}", tenant.id),
                    Some(user),
                )
                .await?;
            users += 1;
        }
    }
    println!(
        "applied {} tenant(s), {roles} role(s), {users} user(s)",
        directory.tenants.len()
    );
    Ok(())
}

pub async fn api_key(target: &Target, command: &ApiKeyCommand) -> anyhow::Result<()> {
    let client = Client::new(target)?;
    match command {
        ApiKeyCommand::Create(user) => {
            let answer = client
                .call(
                    Method::POST,
                    &format!("{}/users/{}/api-keys", user.tenant, user.user),
                    None,
                )
                .await?;
            println!("{}", answer["key"].as_str().unwrap_or_default());
            eprintln!("(shown this once: store it now)");
        }
        ApiKeyCommand::List(user) => {
            let answer = client
                .call(
                    Method::GET,
                    &format!("{}/users/{}/api-keys", user.tenant, user.user),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        ApiKeyCommand::Revoke { user, id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("{}/users/{}/api-keys/{id}", user.tenant, user.user),
                    None,
                )
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub async fn password(target: &Target, command: &PasswordCommand) -> anyhow::Result<()> {
    let PasswordCommand::Set(user) = command;
    let password = match std::env::var("ZIVIO_WEBHOOKS_NEW_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let client = Client::new(target)?;
    client
        .call(
            Method::PUT,
            &format!("{}/users/{}/password", user.tenant, user.user),
            Some(json!({"password": password})),
        )
        .await?;
    println!("password set for {} in {}", user.user, user.tenant);
    Ok(())
}

pub async fn sign_in_link(target: &Target, user: &UserRef) -> anyhow::Result<()> {
    let client = Client::new(target)?;
    let answer = client
        .call(
            Method::POST,
            &format!("{}/users/{}/sign-in-links", user.tenant, user.user),
            None,
        )
        .await?;
    println!("{}", answer["url"].as_str().unwrap_or_default());
    Ok(())
}
