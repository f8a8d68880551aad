//! The directory the platform pushes (PRODUCT.md §3): tenants, roles and users. The service
//! never invents access; it only evaluates what it was given.

use crate::ids::{RoleName, TenantId, UserId};
use crate::permission::Permission;

/// Where a user or resource sits in the organisation; a missing level matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub business_unit: Option<String>,
    pub division: Option<String>,
    pub department: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// A named set of permission strings (validated when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: RoleName,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub active: bool,
    pub placement: Placement,
    /// Roles by name; a name with no role defined grants nothing.
    pub roles: Vec<RoleName>,
}

/// What a first start in embedded mode creates: one tenant, an all-access role and its admin.
#[derive(Debug, Clone)]
pub struct BootstrapSeed {
    pub tenant: Tenant,
    pub role: Role,
    pub admin: User,
    /// An argon2id PHC string; the plain password is printed once and never stored.
    pub password_hash: String,
}

impl BootstrapSeed {
    /// Tenant `demo`, role `admin` holding every permission, and user `admin` with that role.
    pub fn demo(password_hash: String) -> Self {
        let id = |text| TenantId::parse(text).expect("valid literal");
        let role = RoleName::parse("admin").expect("valid literal");
        Self {
            tenant: Tenant {
                id: id("demo"),
                name: "Demo".to_owned(),
            },
            role: Role {
                name: role.clone(),
                permissions: Permission::all().iter().map(ToString::to_string).collect(),
            },
            admin: User {
                id: UserId::parse("admin").expect("valid literal"),
                email: "admin@demo.localhost".to_owned(),
                name: "Demo Admin".to_owned(),
                active: true,
                placement: Placement::default(),
                roles: vec![role],
            },
            password_hash,
        }
    }
}

/// An API key as listed: never the key, only its last characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user: UserId,
    pub hint: String,
    pub created_at: time::OffsetDateTime,
    pub last_used_at: Option<time::OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_grants_its_admin_every_permission() {
        let seed = BootstrapSeed::demo("hash".into());
        assert_eq!(seed.tenant.id.as_str(), "demo");
        assert_eq!(seed.admin.roles, vec![seed.role.name.clone()]);
        assert!(
            seed.role
                .permissions
                .contains(&"webhooks:manage".to_owned())
        );
        assert_eq!(seed.role.permissions.len(), Permission::all().len());
    }
}
