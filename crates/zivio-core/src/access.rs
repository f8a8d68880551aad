//! Access evaluation (docs/product.md §3): what a user may see, which sensitive field groups they
//! hold, and whether one user's access covers another's (the privilege boundary).

use std::collections::{BTreeMap, BTreeSet};

use crate::directory::{Placement, Role, User};
use crate::ids::UserId;
use crate::permission::{Permission, Scope};

/// What the platform says about a resource: where it sits and who owns it. Never part of a
/// payload; it only decides visibility.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceMeta {
    pub placement: Placement,
    pub owner_ids: Vec<String>,
}

/// A user's effective access: the union of their roles' permissions, evaluated against their
/// own placement. An inactive user's access grants nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    user: UserId,
    active: bool,
    placement: Placement,
    manage_webhooks: bool,
    read: BTreeMap<&'static str, BTreeSet<Scope>>,
    fields: BTreeMap<&'static str, BTreeSet<&'static str>>,
}

impl Access {
    /// The access `user` gets from `roles` (roles the user does not hold are ignored, so the
    /// caller may pass all roles of the tenant). Permission strings were validated when the
    /// role was written; any that no longer parse grant nothing.
    pub fn of(user: &User, roles: &[Role]) -> Access {
        let mut access = Access {
            user: user.id.clone(),
            active: user.active,
            placement: user.placement.clone(),
            manage_webhooks: false,
            read: BTreeMap::new(),
            fields: BTreeMap::new(),
        };
        let held = roles.iter().filter(|role| user.roles.contains(&role.name));
        for permission in held.flat_map(|role| &role.permissions) {
            match Permission::parse(permission) {
                Ok(Permission::ManageWebhooks) => access.manage_webhooks = true,
                Ok(Permission::Read { collection, scope }) => {
                    access.read.entry(collection).or_default().insert(scope);
                }
                Ok(Permission::Fields { collection, group }) => {
                    access.fields.entry(collection).or_default().insert(group);
                }
                Err(_) => {}
            }
        }
        access
    }

    /// The stand-in for a user who no longer exists: inactive, and holding every permission,
    /// so that only an all-access admin covers them.
    pub fn deleted_user(id: &UserId) -> Access {
        let everything = Role {
            name: crate::ids::RoleName::parse("deleted-user").expect("valid literal"),
            permissions: Permission::all().iter().map(ToString::to_string).collect(),
        };
        let user = User {
            id: id.clone(),
            email: String::new(),
            name: String::new(),
            active: false,
            placement: Placement::default(),
            roles: vec![everything.name.clone()],
        };
        Access::of(&user, &[everything])
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// May use the Webhooks section and the webhook API.
    pub fn can_manage_webhooks(&self) -> bool {
        self.active && self.manage_webhooks
    }

    /// Whether the user holds any read scope on `collection`: enough to see embedded objects
    /// of that collection, which carry no placement of their own.
    pub fn can_read_any(&self, collection: &str) -> bool {
        self.active
            && self
                .read
                .get(collection)
                .is_some_and(|scopes| !scopes.is_empty())
    }

    /// The same roles' access for an active user: what an inactive owner's webhooks would
    /// receive were they active again (payload previews).
    pub fn as_if_active(&self) -> Access {
        Access {
            active: true,
            ..self.clone()
        }
    }

    /// Whether the user may see a resource of `collection` with this placement and owners.
    pub fn can_read(&self, collection: &str, resource: &ResourceMeta) -> bool {
        if !self.active {
            return false;
        }
        self.read.get(collection).is_some_and(|scopes| {
            scopes
                .iter()
                .any(|scope| self.scope_grants(*scope, resource))
        })
    }

    fn scope_grants(&self, scope: Scope, resource: &ResourceMeta) -> bool {
        let mine = &self.placement;
        let theirs = &resource.placement;
        // A missing level on either side matches nothing at that level or below.
        let level =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a == b);
        let business_unit = level(&mine.business_unit, &theirs.business_unit);
        let division = business_unit && level(&mine.division, &theirs.division);
        let department = division && level(&mine.department, &theirs.department);
        match scope {
            Scope::Tenant => true,
            Scope::BusinessUnit => business_unit,
            Scope::Division => division,
            Scope::Department => department,
            Scope::Own => resource.owner_ids.iter().any(|id| id == self.user.as_str()),
        }
    }

    /// Whether the user holds field group `group` of `collection`.
    pub fn holds_group(&self, collection: &str, group: &str) -> bool {
        self.active
            && self
                .fields
                .get(collection)
                .is_some_and(|groups| groups.contains(group))
    }

    /// The privilege boundary: whether this user may act on data of a webhook owned by
    /// `owner`. True for the owner; otherwise, for every collection the owner can read, this
    /// user must hold `tenant` scope and every field group the owner holds there. The owner's
    /// access counts whether or not the owner is active (it is what their webhook would send
    /// if re-activated); this user must be active.
    pub fn covers(&self, owner: &Access) -> bool {
        self.coverage_gap(owner).is_none()
    }

    /// Why this user does not cover `owner`, for the 403 detail; `None` when they do.
    pub fn coverage_gap(&self, owner: &Access) -> Option<String> {
        if !self.active {
            return Some("your account is inactive".to_owned());
        }
        if self.user == owner.user {
            return None;
        }
        for collection in owner.read.keys() {
            let tenant_wide = self
                .read
                .get(collection)
                .is_some_and(|scopes| scopes.contains(&Scope::Tenant));
            if !tenant_wide {
                return Some(format!(
                    "the owner can read {collection}, so this needs {collection}:read:tenant, which you do not hold"
                ));
            }
            for group in owner.fields.get(collection).into_iter().flatten() {
                if !self.holds_group(collection, group) {
                    return Some(format!(
                        "the owner holds {collection}:fields:{group}, which you do not"
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoleName;
    use proptest::prelude::*;

    fn placement(bu: Option<&str>, division: Option<&str>, department: Option<&str>) -> Placement {
        Placement {
            business_unit: bu.map(str::to_owned),
            division: division.map(str::to_owned),
            department: department.map(str::to_owned),
        }
    }

    fn access<S: AsRef<str>>(id: &str, active: bool, at: Placement, permissions: &[S]) -> Access {
        let role = Role {
            name: RoleName::parse("r").unwrap(),
            permissions: permissions.iter().map(|p| p.as_ref().to_owned()).collect(),
        };
        let user = User {
            id: UserId::parse(id).unwrap(),
            email: format!("{id}@example.com"),
            name: id.to_owned(),
            active,
            placement: at,
            roles: vec![role.name.clone()],
        };
        Access::of(&user, &[role])
    }

    fn resource(at: Placement, owners: &[&str]) -> ResourceMeta {
        ResourceMeta {
            placement: at,
            owner_ids: owners.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_match_placement_levels_top_down() {
        let home = placement(Some("emea"), Some("uk"), Some("finance"));
        let cases = [
            ("invoices:read:tenant", placement(None, None, None), true),
            (
                "invoices:read:business_unit",
                placement(Some("emea"), None, None),
                true,
            ),
            (
                "invoices:read:business_unit",
                placement(Some("apac"), Some("uk"), None),
                false,
            ),
            (
                "invoices:read:division",
                placement(Some("emea"), Some("uk"), None),
                true,
            ),
            // Same division name under another business unit is another division.
            (
                "invoices:read:division",
                placement(Some("apac"), Some("uk"), None),
                false,
            ),
            (
                "invoices:read:department",
                placement(Some("emea"), Some("uk"), Some("finance")),
                true,
            ),
            (
                "invoices:read:department",
                placement(Some("emea"), Some("uk"), Some("legal")),
                false,
            ),
            (
                "invoices:read:department",
                placement(Some("emea"), Some("uk"), None),
                false,
            ),
        ];
        for (permission, at, visible) in cases {
            let user = access("u1", true, home.clone(), &[permission]);
            assert_eq!(
                user.can_read("invoices", &resource(at.clone(), &[])),
                visible,
                "{permission} {at:?}"
            );
            assert!(
                !user.can_read("bids", &resource(at, &[])),
                "other collections stay hidden"
            );
        }
    }

    #[test]
    fn missing_levels_match_nothing() {
        let user = access(
            "u1",
            true,
            placement(Some("emea"), None, None),
            &["jobs:read:division"],
        );
        assert!(!user.can_read("jobs", &resource(placement(Some("emea"), None, None), &[])));
        let user = access(
            "u1",
            true,
            placement(None, None, None),
            &["jobs:read:business_unit"],
        );
        assert!(!user.can_read("jobs", &resource(placement(None, None, None), &[])));
    }

    #[test]
    fn own_scope_needs_the_user_among_the_owners() {
        let user = access("7158", true, Placement::default(), &["offers:read:own"]);
        assert!(user.can_read("offers", &resource(Placement::default(), &["1", "7158"])));
        assert!(!user.can_read("offers", &resource(Placement::default(), &["1"])));
    }

    #[test]
    fn own_and_placement_scopes_add_up() {
        let user = access(
            "u1",
            true,
            placement(Some("emea"), Some("uk"), Some("finance")),
            &["bids:read:own", "bids:read:department"],
        );
        let elsewhere = placement(Some("apac"), None, None);
        assert!(
            user.can_read("bids", &resource(elsewhere.clone(), &["u1"])),
            "owned"
        );
        assert!(!user.can_read("bids", &resource(elsewhere, &["u2"])));
    }

    #[test]
    fn inactive_users_have_no_access_at_all() {
        let all: Vec<String> = Permission::all().iter().map(ToString::to_string).collect();
        let user = access("u1", false, Placement::default(), &all);
        assert!(!user.can_manage_webhooks());
        assert!(!user.can_read("invoices", &resource(Placement::default(), &["u1"])));
        assert!(!user.can_read_any("users"));
        assert!(!user.holds_group("invoices", "financials"));
        let active = access("u2", true, Placement::default(), &all);
        assert!(!user.covers(&active));
        assert!(
            active.covers(&user),
            "an inactive owner's roles still count and are covered"
        );
    }

    #[test]
    fn only_all_access_admins_cover_a_deleted_owner() {
        let gone = Access::deleted_user(&UserId::parse("gone").unwrap());
        let all: Vec<String> = Permission::all().iter().map(ToString::to_string).collect();
        assert!(access("admin", true, Placement::default(), &all).covers(&gone));
        let almost: Vec<&String> = all
            .iter()
            .filter(|p| *p != "users:fields:contact")
            .collect();
        let almost: Vec<&str> = almost.iter().map(|p| p.as_str()).collect();
        assert!(!access("junior", true, Placement::default(), &almost).covers(&gone));
        assert!(!gone.can_manage_webhooks() && !gone.can_read_any("invoices"));
    }

    #[test]
    fn roles_the_user_does_not_hold_grant_nothing() {
        let user = User {
            id: UserId::parse("u1").unwrap(),
            email: "u1@example.com".into(),
            name: "U".into(),
            active: true,
            placement: Placement::default(),
            roles: vec![RoleName::parse("viewer").unwrap()],
        };
        let admin = Role {
            name: RoleName::parse("admin").unwrap(),
            permissions: vec!["webhooks:manage".into()],
        };
        assert!(!Access::of(&user, &[admin]).can_manage_webhooks());
    }

    #[test]
    fn coverage_needs_tenant_scope_and_every_group_of_the_owner() {
        let owner = access(
            "owner",
            true,
            Placement::default(),
            &[
                "invoices:read:division",
                "invoices:fields:financials",
                "jobs:read:own",
            ],
        );
        let full = access(
            "admin",
            true,
            Placement::default(),
            &[
                "invoices:read:tenant",
                "invoices:fields:financials",
                "jobs:read:tenant",
            ],
        );
        assert!(full.covers(&owner));
        assert!(owner.covers(&owner), "owners cover themselves");

        let no_group = access(
            "a",
            true,
            Placement::default(),
            &["invoices:read:tenant", "jobs:read:tenant"],
        );
        let gap = no_group.coverage_gap(&owner).unwrap();
        assert!(gap.contains("invoices:fields:financials"), "{gap}");

        let narrow = access(
            "b",
            true,
            Placement::default(),
            &[
                "invoices:read:division",
                "invoices:fields:financials",
                "jobs:read:tenant",
            ],
        );
        let gap = narrow.coverage_gap(&owner).unwrap();
        assert!(gap.contains("invoices:read:tenant"), "{gap}");
        assert!(
            !owner.covers(&full),
            "a narrower owner does not cover a wider admin"
        );
    }

    fn level() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("a".to_owned())),
            Just(Some("b".to_owned()))
        ]
    }

    fn any_placement() -> impl Strategy<Value = Placement> {
        (level(), level(), level()).prop_map(|(business_unit, division, department)| Placement {
            business_unit,
            division,
            department,
        })
    }

    fn any_permissions() -> impl Strategy<Value = Vec<String>> {
        let all: Vec<String> = Permission::all()
            .into_iter()
            .chain(
                ["invoices", "jobs", "users"]
                    .into_iter()
                    .flat_map(|collection| {
                        Scope::ALL
                            .into_iter()
                            .map(move |scope| Permission::Read { collection, scope })
                    }),
            )
            .map(|permission| permission.to_string())
            .collect();
        proptest::sample::subsequence(all.clone(), 0..all.len())
    }

    proptest! {
        #[test]
        fn wider_scopes_see_everything_narrower_ones_see(
            home in any_placement(),
            at in any_placement(),
            owners in proptest::collection::vec(prop_oneof![Just("u1"), Just("u2")], 0..3),
        ) {
            let meta = resource(at, &owners);
            let sees = |scope: &str| access("u1", true, home.clone(), &[&format!("jobs:read:{scope}")])
                .can_read("jobs", &meta);
            let chain = ["department", "division", "business_unit", "tenant"];
            for pair in chain.windows(2) {
                prop_assert!(!sees(pair[0]) || sees(pair[1]), "{} ⊆ {}", pair[0], pair[1]);
            }
            prop_assert!(sees("tenant"));
            prop_assert_eq!(sees("own"), owners.contains(&"u1"));
        }

        #[test]
        fn inactive_users_never_see_or_cover(
            home in any_placement(),
            at in any_placement(),
            permissions in any_permissions(),
        ) {
            let user = access("u1", false, home, &permissions);
            prop_assert!(!user.can_read("jobs", &resource(at, &["u1"])));
            prop_assert!(!user.can_manage_webhooks());
            prop_assert!(!user.covers(&user));
        }

        #[test]
        fn coverage_is_reflexive_and_transitive(
            a in any_permissions(),
            b in any_permissions(),
            c in any_permissions(),
        ) {
            let (a, b, c) = (
                access("a", true, Placement::default(), &a),
                access("b", true, Placement::default(), &b),
                access("c", true, Placement::default(), &c),
            );
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
            let everything: Vec<String> = Permission::all().iter().map(ToString::to_string).collect();
            let admin = access("admin", true, Placement::default(), &everything);
            prop_assert!(admin.covers(&a) && admin.covers(&b) && admin.covers(&c));
        }
    }
}
