//! The directory the platform pushes (docs/product.md §3): tenants, roles and users. The service
//! never invents access; it only evaluates what it was given.

use crate::access::Access;
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

/// An API key as listed: never the key, only its last characters. A revoked key stays listed
/// (with when and why) and never works again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user: UserId,
    pub hint: String,
    pub created_at: time::OffsetDateTime,
    pub last_used_at: Option<time::OffsetDateTime>,
    pub revoked: Option<Revocation>,
}

/// When and why an API key stopped working for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub at: time::OffsetDateTime,
    pub reason: RevokedReason,
}

/// Why an API key was revoked (and, for the last three, why the user's admin sessions ended).
/// The string forms are part of the platform API and stored as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RevokedReason {
    /// Revoked through the platform API.
    Revoked,
    /// The user was deactivated.
    UserDeactivated,
    /// The user was deleted.
    UserDeleted,
    /// The user lost `webhooks:manage` (a change of their roles, of a role's permissions, or
    /// the deletion of a role).
    PermissionRemoved,
}

impl RevokedReason {
    pub const ALL: [RevokedReason; 4] = [
        RevokedReason::Revoked,
        RevokedReason::UserDeactivated,
        RevokedReason::UserDeleted,
        RevokedReason::PermissionRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevokedReason::Revoked => "revoked",
            RevokedReason::UserDeactivated => "user_deactivated",
            RevokedReason::UserDeleted => "user_deleted",
            RevokedReason::PermissionRemoved => "permission_removed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// Whether a change of the directory ends a user's admin sessions and API keys for good, and
/// why (docs/product.md §8: "Deactivating a user or removing their `webhooks:manage` ends their
/// sessions and API keys at once"). `before` and `after` are the user's access just before and
/// just after the change; `None` when the user does not exist. Regaining access later never
/// revives what was ended: it needs a new sign-in and a new key.
///
/// - Deleting a user ends everything, whatever access they had.
/// - Deactivating an active user ends everything, whether or not they could manage webhooks.
/// - An active user who could manage webhooks and no longer can (their roles changed, a role
///   they hold lost the permission or was deleted) loses everything too, even if a later change
///   gives the permission back.
/// - Nothing else ends anything: a new user, a user who stays inactive, a user who never held
///   `webhooks:manage` and still does not (keys may be issued before the permission is granted).
pub fn access_ended(before: Option<&Access>, after: Option<&Access>) -> Option<RevokedReason> {
    let before = before?;
    let Some(after) = after else {
        return Some(RevokedReason::UserDeleted);
    };
    if before.is_active() && !after.is_active() {
        return Some(RevokedReason::UserDeactivated);
    }
    if before.can_manage_webhooks() && !after.can_manage_webhooks() {
        return Some(RevokedReason::PermissionRemoved);
    }
    None
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

    fn access(active: bool, permissions: &[&str]) -> Access {
        let role = Role {
            name: RoleName::parse("r").unwrap(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        };
        let user = User {
            id: UserId::parse("u1").unwrap(),
            email: "u1@example.com".into(),
            name: "U1".into(),
            active,
            placement: Placement::default(),
            roles: vec![role.name.clone()],
        };
        Access::of(&user, &[role])
    }

    const MANAGE: &[&str] = &["webhooks:manage", "invoices:read:tenant"];
    const READ_ONLY: &[&str] = &["invoices:read:tenant"];

    #[test]
    fn deleting_a_user_always_ends_their_access() {
        for (active, permissions) in [(true, MANAGE), (false, MANAGE), (true, READ_ONLY)] {
            assert_eq!(
                access_ended(Some(&access(active, permissions)), None),
                Some(RevokedReason::UserDeleted),
                "{active} {permissions:?}"
            );
        }
    }

    #[test]
    fn deactivating_an_active_user_ends_their_access_whatever_they_held() {
        for (before, after) in [
            (MANAGE, MANAGE),
            (READ_ONLY, READ_ONLY),
            (MANAGE, READ_ONLY),
        ] {
            assert_eq!(
                access_ended(Some(&access(true, before)), Some(&access(false, after))),
                Some(RevokedReason::UserDeactivated),
                "{before:?} -> {after:?}"
            );
        }
    }

    #[test]
    fn losing_webhooks_manage_ends_the_access_of_an_active_user() {
        assert_eq!(
            access_ended(Some(&access(true, MANAGE)), Some(&access(true, READ_ONLY))),
            Some(RevokedReason::PermissionRemoved)
        );
        assert_eq!(
            access_ended(Some(&access(true, MANAGE)), Some(&access(true, &[]))),
            Some(RevokedReason::PermissionRemoved)
        );
    }

    #[test]
    fn other_changes_end_nothing() {
        let cases = [
            (None, Some(access(true, MANAGE))),
            (None, Some(access(false, READ_ONLY))),
            (None, None),
            (Some(access(true, MANAGE)), Some(access(true, MANAGE))),
            // Gaining the permission, or activation, takes nothing away.
            (Some(access(true, READ_ONLY)), Some(access(true, MANAGE))),
            (Some(access(false, MANAGE)), Some(access(true, MANAGE))),
            // Inactive before and after: ended already when they were deactivated.
            (Some(access(false, MANAGE)), Some(access(false, READ_ONLY))),
            // Never held the permission: keys may be issued before it is granted.
            (Some(access(true, READ_ONLY)), Some(access(true, &[]))),
        ];
        for (before, after) in &cases {
            assert_eq!(
                access_ended(before.as_ref(), after.as_ref()),
                None,
                "{before:?} -> {after:?}"
            );
        }
    }

    #[test]
    fn revoked_reasons_round_trip_their_api_names() {
        for reason in RevokedReason::ALL {
            assert_eq!(RevokedReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RevokedReason::parse("expired"), None);
        assert_eq!(
            RevokedReason::ALL.map(RevokedReason::as_str),
            [
                "revoked",
                "user_deactivated",
                "user_deleted",
                "permission_removed"
            ]
        );
    }
}
