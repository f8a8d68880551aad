//! Permission strings (docs/product.md §3): `webhooks:manage`, `<collection>:read:<scope>` and
//! `<collection>:fields:<group>`, validated against the collections and field groups Zivio knows.

use std::fmt;

/// A resource collection and the sensitive field groups it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    pub name: &'static str,
    pub field_groups: &'static [&'static str],
}

/// Every collection of the v4 catalog with its field groups (docs/product.md §2–3).
pub const COLLECTIONS: &[Collection] = &[
    collection("jobs", &["financials"]),
    collection("job_approvals", &[]),
    collection("eois", &[]),
    collection("eoi_responses", &[]),
    collection("bids", &["financials", "scoring"]),
    collection("offers", &["financials", "contracts"]),
    collection("variation_orders", &["financials", "contracts"]),
    collection("milestones", &["financials"]),
    collection("purchase_orders", &[]),
    collection("invoices", &["financials"]),
    collection("sales_invoices", &["financials"]),
    collection("suppliers", &["banking", "compliance", "admin"]),
    collection("users", &["contact"]),
];

const fn collection(name: &'static str, field_groups: &'static [&'static str]) -> Collection {
    Collection { name, field_groups }
}

/// How much of a collection a read permission covers; ordered from narrowest to widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Own,
    Department,
    Division,
    BusinessUnit,
    Tenant,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Own,
        Scope::Department,
        Scope::Division,
        Scope::BusinessUnit,
        Scope::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::Department => "department",
            Scope::Division => "division",
            Scope::BusinessUnit => "business_unit",
            Scope::Tenant => "tenant",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

/// One validated permission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Permission {
    ManageWebhooks,
    Read {
        collection: &'static str,
        scope: Scope,
    },
    Fields {
        collection: &'static str,
        group: &'static str,
    },
}

/// Why a permission string was refused; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "`{0}` is not a permission: expected webhooks:manage, <collection>:read:<scope> or <collection>:fields:<group>"
    )]
    Malformed(String),
    #[error("unknown collection `{0}`")]
    UnknownCollection(String),
    #[error(
        "unknown scope `{scope}` in `{permission}`: expected tenant, business_unit, division, department or own"
    )]
    UnknownScope { permission: String, scope: String },
    #[error("unknown field group `{group}` of collection `{collection}`")]
    UnknownFieldGroup { collection: String, group: String },
}

impl Permission {
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        if text == "webhooks:manage" {
            return Ok(Permission::ManageWebhooks);
        }
        let malformed = || PermissionError::Malformed(text.to_owned());
        let mut parts = text.split(':');
        let (Some(name), Some(kind), Some(value), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let collection = COLLECTIONS
            .iter()
            .find(|collection| collection.name == name)
            .ok_or_else(|| PermissionError::UnknownCollection(name.to_owned()))?;
        match kind {
            "read" => {
                let scope = Scope::parse(value).ok_or_else(|| PermissionError::UnknownScope {
                    permission: text.to_owned(),
                    scope: value.to_owned(),
                })?;
                Ok(Permission::Read {
                    collection: collection.name,
                    scope,
                })
            }
            "fields" => {
                let group = collection
                    .field_groups
                    .iter()
                    .find(|group| **group == value)
                    .ok_or_else(|| PermissionError::UnknownFieldGroup {
                        collection: name.to_owned(),
                        group: value.to_owned(),
                    })?;
                Ok(Permission::Fields {
                    collection: collection.name,
                    group,
                })
            }
            _ => Err(malformed()),
        }
    }

    /// The widest access there is: manage webhooks, read every collection tenant-wide and see
    /// every field group. Used for the bootstrap administrator's role.
    pub fn all() -> Vec<Permission> {
        let mut all = vec![Permission::ManageWebhooks];
        for collection in COLLECTIONS {
            all.push(Permission::Read {
                collection: collection.name,
                scope: Scope::Tenant,
            });
            all.extend(
                collection
                    .field_groups
                    .iter()
                    .map(|group| Permission::Fields {
                        collection: collection.name,
                        group,
                    }),
            );
        }
        all
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::ManageWebhooks => f.write_str("webhooks:manage"),
            Permission::Read { collection, scope } => {
                write!(f, "{collection}:read:{}", scope.as_str())
            }
            Permission::Fields { collection, group } => write!(f, "{collection}:fields:{group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            Permission::parse("webhooks:manage"),
            Ok(Permission::ManageWebhooks)
        );
        assert_eq!(
            Permission::parse("invoices:read:division"),
            Ok(Permission::Read {
                collection: "invoices",
                scope: Scope::Division
            })
        );
        assert_eq!(
            Permission::parse("suppliers:fields:banking"),
            Ok(Permission::Fields {
                collection: "suppliers",
                group: "banking"
            })
        );
    }

    #[test]
    fn refusals_name_the_unknown_part() {
        assert_eq!(
            Permission::parse("widgets:read:tenant"),
            Err(PermissionError::UnknownCollection("widgets".into()))
        );
        let scope = Permission::parse("invoices:read:planet").unwrap_err();
        assert!(scope.to_string().contains("`planet`"), "{scope}");
        let group = Permission::parse("invoices:fields:banking").unwrap_err();
        assert!(group.to_string().contains("`banking`"), "{group}");
        for bad in [
            "",
            "webhooks",
            "invoices:read",
            "invoices:write:tenant",
            "a:b:c:d",
        ] {
            assert!(Permission::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_permissions_parse_back_and_cover_every_group() {
        let all = Permission::all();
        let groups: usize = COLLECTIONS.iter().map(|c| c.field_groups.len()).sum();
        assert_eq!(all.len(), 1 + COLLECTIONS.len() + groups);
        for permission in all {
            assert_eq!(Permission::parse(&permission.to_string()), Ok(permission));
        }
    }

    #[test]
    fn scopes_are_ordered_narrow_to_wide() {
        assert!(Scope::Own < Scope::Department);
        assert!(Scope::Department < Scope::Division);
        assert!(Scope::Division < Scope::BusinessUnit);
        assert!(Scope::BusinessUnit < Scope::Tenant);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_display_round_trips(text in "[a-z_:]{0,40}") {
            if let Ok(permission) = Permission::parse(&text) {
                prop_assert_eq!(permission.to_string(), text);
            }
        }
    }
}
