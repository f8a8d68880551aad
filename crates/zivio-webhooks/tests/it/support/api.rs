//! A started service with a typed client for the platform and v4 APIs, on either backend.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zivio_core::keys::SecretsKey;
use zivio_store::testing::TestDatabase;

use super::service::Service;

const PLATFORM_KEY: &str = "zpk_integration_tests_platform_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Api {
    pub service: Service,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    _database: Option<TestDatabase>,
}

/// An answer: status, headers and the JSON body (`Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Api {
    /// A fresh service without bootstrap data, or `None` for PostgreSQL when
    /// `ZIVIO_TEST_DATABASE_URL` is unset.
    pub async fn start(backend: Backend, env: &[(&str, &str)]) -> Option<Api> {
        let dir = tempfile::tempdir().unwrap();
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => match TestDatabase::postgres().await {
                Some(database) => Some(database),
                None => {
                    eprintln!("ZIVIO_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
                    return None;
                }
            },
        };
        let secrets_key = SecretsKey::from_bytes([42; 32]).to_base64();
        let mut vars = vec![
            ("ZIVIO_WEBHOOKS_PLATFORM_KEY", PLATFORM_KEY),
            ("ZIVIO_WEBHOOKS_SECRETS_KEY", secrets_key.as_str()),
            ("ZIVIO_WEBHOOKS_BOOTSTRAP", "false"),
        ];
        if let Some(database) = &database {
            vars.push(("ZIVIO_WEBHOOKS_DATABASE_URL", database.url.as_str()));
        }
        vars.extend_from_slice(env);
        let service = Service::start(dir.path(), &vars).await;
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Api {
            service,
            client: reqwest::Client::new(),
            dir,
            env,
            _database: database,
        })
    }

    /// The value of a variable the service was started with.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Kills the service with SIGKILL and starts it again on the same data and keys.
    pub async fn kill_and_restart(&mut self) {
        self.restart_with(&[]).await;
    }

    /// Kills the service and starts it again with some variables changed.
    pub async fn restart_with(&mut self, changes: &[(&str, &str)]) {
        for (name, value) in changes {
            self.env.retain(|(key, _)| key != name);
            self.env.push(((*name).to_owned(), (*value).to_owned()));
        }
        self.service.kill().await;
        self.service = Service::start(self.dir.path(), &self.vars()).await;
    }

    /// Another instance on the same database (PostgreSQL), with its own data directory.
    pub async fn another_instance(&self, name: &str) -> Service {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Service::start(&dir, &self.vars()).await
    }

    /// The URL of the service's database.
    pub fn database_url(&self) -> String {
        match &self._database {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("zivio.db").display()),
        }
    }

    /// The service's database, opened beside it (to look at what was queued).
    pub async fn store(&self) -> std::sync::Arc<dyn zivio_store::Store> {
        zivio_store::connect(&zivio_store::ConnectOptions {
            url: self.database_url(),
            max_connections: 2,
        })
        .await
        .expect("open the database")
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        self.send_to(&self.service, method, path, headers, body)
            .await
    }

    async fn send_to(
        &self,
        instance: &Service,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, instance.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// Posts an admin UI form as a browser on this site would (`Sec-Fetch-Site: same-origin`),
    /// with the session cookie (`zivio_session=...`) when given; redirects are not followed.
    pub async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client
            .post(self.service.url(path))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        request.body(body).send().await.unwrap()
    }

    /// Opens the sign-in page as a browser would: the pre-session cookie it sets (`name=value`)
    /// and the form's token.
    pub async fn sign_in_page(&self) -> (String, String) {
        let page = reqwest::get(self.service.url("/admin/sign-in"))
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        let token = html
            .split(r#"name="_token" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the sign-in form carries a token")
            .to_owned();
        (cookie, token)
    }

    /// Posts the sign-in form as a same-site browser would, after opening its page.
    pub async fn post_sign_in(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        let (cookie, token) = self.sign_in_page().await;
        let mut fields = fields.to_vec();
        fields.push(("_token", &token));
        self.post_form("/admin/sign-in", Some(&cookie), &fields)
            .await
    }

    /// A new admin UI session of `user` by a sign-in link: its cookie (`zivio_session=...`).
    pub async fn sign_in_by_link(&self, tenant: &str, user: &str) -> String {
        let link = self
            .platform(
                Method::POST,
                &format!("{tenant}/users/{user}/sign-in-links"),
                None,
            )
            .await;
        assert_eq!(link.status, 201, "{}", link.text);
        let url = url::Url::parse(link.body["url"].as_str().unwrap()).unwrap();
        let opened = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(self.service.url(url.path()))
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 303);
        let cookie = opened.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    /// An admin UI page as the session of `cookie` (`zivio_session=...`) sees it.
    pub async fn admin_page(&self, cookie: &str, path: &str) -> String {
        self.client
            .get(self.service.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Signs in to the admin UI with a password (as a same-site browser would) and returns the
    /// session id from the cookie, checking the cookie's attributes.
    pub async fn sign_in(&self, tenant: &str, email: &str, password: &str) -> String {
        let answer = self
            .post_sign_in(&[("tenant", tenant), ("email", email), ("password", password)])
            .await;
        assert_eq!(answer.status(), 303, "signed in");
        let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("zivio_session=")
            .to_owned()
    }

    pub async fn platform(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.platform_via(&self.service, method, path, body).await
    }

    /// A platform API request to `instance` (this one or another on its database).
    pub async fn platform_via(
        &self,
        instance: &Service,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let auth = format!("Bearer {PLATFORM_KEY}");
        let path = format!("/platform/v4/tenants/{path}");
        self.send_to(instance, method, &path, &[("authorization", &auth)], body)
            .await
    }

    /// A v4 request as `key` in `tenant`.
    pub async fn v4(
        &self,
        key: &str,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        self.send(
            method,
            path,
            &[("x-api-key", key), ("zivio-tenant-id", tenant)],
            body,
        )
        .await
    }

    pub async fn put_tenant(&self, tenant: &str) {
        let answer = self
            .platform(
                Method::PUT,
                tenant,
                Some(json!({"name": tenant.to_uppercase()})),
            )
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
    }

    pub async fn put_role(&self, tenant: &str, role: &str, permissions: &[&str]) {
        let answer = self
            .platform(
                Method::PUT,
                &format!("{tenant}/roles/{role}"),
                Some(json!({"permissions": permissions})),
            )
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
    }

    pub async fn put_user(&self, tenant: &str, user: &str, active: bool, roles: &[&str]) {
        let body = json!({
            "email": format!("{user}@{tenant}.example.com"),
            "name": format!("User {user}"),
            "active": active,
            "placement": {"business_unit": "emea", "division": "uk", "department": "finance"},
            "roles": roles,
        });
        let answer = self
            .platform(Method::PUT, &format!("{tenant}/users/{user}"), Some(body))
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
    }

    pub async fn issue_key(&self, tenant: &str, user: &str) -> String {
        let answer = self
            .platform(
                Method::POST,
                &format!("{tenant}/users/{user}/api-keys"),
                None,
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body["key"].as_str().unwrap().to_owned()
    }

    /// A tenant with a role `admin` holding every permission and a user holding it; returns
    /// that user's API key.
    pub async fn tenant_with_admin(&self, tenant: &str, user: &str) -> String {
        self.put_tenant(tenant).await;
        let everything: Vec<String> = zivio_core::permission::Permission::all()
            .iter()
            .map(ToString::to_string)
            .collect();
        let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
        self.put_role(tenant, "admin", &everything).await;
        self.put_user(tenant, user, true, &["admin"]).await;
        self.issue_key(tenant, user).await
    }

    /// Creates a webhook and returns the answer's body (`webhook` and `secret`).
    pub async fn create_webhook(&self, key: &str, tenant: &str, body: Value) -> Value {
        let answer = self
            .v4(key, tenant, Method::POST, "/v4/webhooks", Some(body))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body
    }
}

/// A valid webhook body pointing at a public address. Only for tests that publish nothing: the
/// engine would send to it.
pub fn webhook_body(name: &str) -> Value {
    json!({
        "name": name,
        "url": "https://93.184.216.34/zivio/hook?token=s3cr3t-path-token",
        "description": "ERP sync",
        "events": ["invoice.*", "job.created"],
    })
}

/// Asserts a problem document with this status and returns it.
pub fn problem(answer: &Answer, status: u16) -> &Value {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{}",
        answer.text
    );
    assert_eq!(answer.body["status"], status);
    assert!(answer.body["detail"].is_string() && answer.body["title"].is_string());
    &answer.body
}

/// Runs each test body once per backend, as `<backend>::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::api::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::api::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;
