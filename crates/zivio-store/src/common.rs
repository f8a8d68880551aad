//! Queries whose SQL is the same on SQLite and PostgreSQL (both accept `$n` placeholders). The
//! macro instantiates them once per backend with that backend's concrete types, so the two
//! stores share one text of each query instead of keeping twins in step; only the
//! representation of time differs (`$time` converts an `OffsetDateTime` for binding).

macro_rules! common_queries {
    ($db:ty, $time:path) => {
        use sqlx::Row as _;
        use time::OffsetDateTime;
        use zivio_core::directory::{BootstrapSeed, Placement, Role, Tenant, User};
        use zivio_core::ids::{RoleName, TenantId, UserId};

        use $crate::{KeyCheck, StoreResult, stored};

        type Pool = sqlx::Pool<$db>;
        type Connection = <$db as sqlx::Database>::Connection;

        pub(crate) async fn claim_key_check(pool: &Pool, check: &str) -> StoreResult<KeyCheck> {
            let inserted = sqlx::query(
                "INSERT INTO settings (name, value) VALUES ('secrets_key_check', $1)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(check)
            .execute(pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(KeyCheck::Recorded);
            }
            let recorded: String =
                sqlx::query_scalar("SELECT value FROM settings WHERE name = 'secrets_key_check'")
                    .fetch_one(pool)
                    .await?;
            Ok(if recorded == check {
                KeyCheck::Matches
            } else {
                KeyCheck::Mismatch
            })
        }

        /// The body of `Store::bootstrap`, inside the caller's write transaction.
        pub(crate) async fn bootstrap(
            tx: &mut Connection,
            seed: &BootstrapSeed,
            now: OffsetDateTime,
        ) -> StoreResult<bool> {
            let first = sqlx::query(
                "INSERT INTO settings (name, value) VALUES ('bootstrapped', $1)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(now.unix_timestamp().to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let has_tenants: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants)")
                .fetch_one(&mut *tx)
                .await?;
            // The marker stays either way: a database that held data is never bootstrapped.
            if !first || has_tenants {
                return Ok(false);
            }
            insert_seed(tx, seed, $time(now)).await?;
            Ok(true)
        }

        async fn insert_seed<T>(
            tx: &mut Connection,
            seed: &BootstrapSeed,
            now: T,
        ) -> StoreResult<()>
        where
            T: for<'q> sqlx::Encode<'q, $db> + sqlx::Type<$db> + Copy + Send + 'static,
        {
            let tenant = seed.tenant.id.as_str();
            sqlx::query(
                "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
            )
            .bind(tenant)
            .bind(&seed.tenant.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO roles (tenant_id, name, updated_at) VALUES ($1, $2, $3)")
                .bind(tenant)
                .bind(seed.role.name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for permission in &seed.role.permissions {
                sqlx::query(
                    "INSERT INTO role_permissions (tenant_id, role_name, permission)
                     VALUES ($1, $2, $3)",
                )
                .bind(tenant)
                .bind(seed.role.name.as_str())
                .bind(permission)
                .execute(&mut *tx)
                .await?;
            }
            let admin = &seed.admin;
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, name, active, business_unit, division,
                                    department, password_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(tenant)
            .bind(admin.id.as_str())
            .bind(&admin.email)
            .bind(&admin.name)
            .bind(admin.active)
            .bind(&admin.placement.business_unit)
            .bind(&admin.placement.division)
            .bind(&admin.placement.department)
            .bind(&seed.password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for role in &admin.roles {
                sqlx::query(
                    "INSERT INTO user_roles (tenant_id, user_id, role_name) VALUES ($1, $2, $3)",
                )
                .bind(tenant)
                .bind(admin.id.as_str())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }

        pub(crate) async fn tenant(pool: &Pool, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
            let row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
                .bind(tenant.as_str())
                .fetch_optional(pool)
                .await?;
            row.map(|row| {
                Ok(Tenant {
                    id: stored(TenantId::parse(row.get("id")))?,
                    name: row.get("name"),
                })
            })
            .transpose()
        }

        pub(crate) async fn role(
            pool: &Pool,
            tenant: &TenantId,
            name: &RoleName,
        ) -> StoreResult<Option<Role>> {
            let mut tx = pool.begin().await?;
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM roles WHERE tenant_id = $1 AND name = $2)",
            )
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                return Ok(None);
            }
            let permissions = sqlx::query_scalar(
                "SELECT permission FROM role_permissions WHERE tenant_id = $1 AND role_name = $2
                 ORDER BY permission",
            )
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_all(&mut *tx)
            .await?;
            Ok(Some(Role {
                name: name.clone(),
                permissions,
            }))
        }

        pub(crate) async fn user(
            pool: &Pool,
            tenant: &TenantId,
            user: &UserId,
        ) -> StoreResult<Option<User>> {
            let mut tx = pool.begin().await?;
            let Some(row) = sqlx::query(
                "SELECT id, email, name, active, business_unit, division, department
                 FROM users WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            let roles: Vec<String> = sqlx::query_scalar(
                "SELECT role_name FROM user_roles WHERE tenant_id = $1 AND user_id = $2
                 ORDER BY role_name",
            )
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await?;
            Ok(Some(User {
                id: stored(UserId::parse(row.get("id")))?,
                email: row.get("email"),
                name: row.get("name"),
                active: row.get("active"),
                placement: Placement {
                    business_unit: row.get("business_unit"),
                    division: row.get("division"),
                    department: row.get("department"),
                },
                roles: roles
                    .iter()
                    .map(|role| stored(RoleName::parse(role)))
                    .collect::<StoreResult<_>>()?,
            }))
        }

        pub(crate) async fn password_hash(
            pool: &Pool,
            tenant: &TenantId,
            user: &UserId,
        ) -> StoreResult<Option<String>> {
            let hash: Option<Option<String>> = sqlx::query_scalar(
                "SELECT password_hash FROM users WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_optional(pool)
            .await?;
            Ok(hash.flatten())
        }
    };
}

pub(crate) use common_queries;
