//! Identifiers that come from the Zivio platform (tenants, users, roles). They appear in URLs
//! and logs, so they are limited to a safe alphabet and length.

use std::fmt;

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id: expected 1 to 64 letters, digits, `-`, `_` or `.`")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! platform_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if is_platform_id(text) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(IdError { kind: $kind, value: text.chars().take(80).collect() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

platform_id!(
    /// A tenant: one customer organisation.
    TenantId,
    "tenant"
);
platform_id!(
    /// A user of a tenant, as known to the platform.
    UserId,
    "user"
);
platform_id!(
    /// A role name, unique within a tenant.
    RoleName,
    "role"
);

fn is_platform_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_platform_style_ids() {
        for good in ["demo", "7158", "acme-corp", "role.admin_2"] {
            assert_eq!(TenantId::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn refuses_empty_long_and_unsafe_ids() {
        let long = "a".repeat(65);
        for bad in ["", long.as_str(), "a b", "a/b", "é", "a\nb", "../x"] {
            let err = UserId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "user");
        }
    }
}
