//! ScyllaDB settings as plain types (no driver): keyspace replication, keyspace names and consistency levels, so
//! the operator validates a pipeline's storage without linking the driver's session code. `skein-storage`'s
//! `scylla` module turns them into CQL and driver settings.

use serde::{Deserialize, Serialize};

/// Keyspace replication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor (single-DC or test clusters).
    Simple {
        /// Copies of each row.
        replication_factor: u32,
    },
    /// `NetworkTopologyStrategy` with a replication factor per datacenter.
    NetworkTopology {
        /// Datacenter name → copies of each row there.
        datacenters: std::collections::BTreeMap<String, u32>,
    },
}

/// Validates a keyspace name as CQL requires (it is interpolated into statements).
///
/// # Errors
/// A message when the name is empty, too long or has characters other than ASCII letters, digits and `_`.
pub fn validate_keyspace(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid keyspace name {name:?}: use 1-48 letters, digits or _, starting with a letter"))
    }
}

/// A CQL consistency level, by its CQL name (`ONE`, `LOCAL_QUORUM`, …; case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "variants are the CQL consistency levels of the same names")]
pub enum Consistency {
    Any,
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

impl std::str::FromStr for Consistency {
    type Err = String;

    /// # Errors
    /// A message naming the accepted values.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            "LOCAL_QUORUM" => Consistency::LocalQuorum,
            "EACH_QUORUM" => Consistency::EachQuorum,
            "LOCAL_ONE" => Consistency::LocalOne,
            _ => {
                return Err(format!(
                    "unknown consistency {s:?}: use ONE, QUORUM, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM or ALL"
                ));
            }
        })
    }
}
