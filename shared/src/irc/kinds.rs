//! Operation kinds: what an operation may do in the target region. Each kind checks its
//! payload (on submit and again at the remote; core, so it is fuzzed without AWS) and, with
//! the `aws` feature, turns it into one write that joins the remote's idempotency
//! transaction. Adding a kind is one type implementing [`OperationKind`] and one
//! [`Kinds::register`] call.

use crate::ids::{GroupId, HostId};
#[cfg(feature = "aws")]
use crate::lease::dynamo::{blind_delete_write, group_definition_writes};
#[cfg(feature = "aws")]
use crate::lease::record::Member;
#[cfg(feature = "aws")]
use crate::lease::store::{BlindDeletePlan, GroupDefinition, PutMode};
#[cfg(feature = "aws")]
use crate::lease::LeaseConfig;
use crate::Millis;
#[cfg(feature = "aws")]
use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::Deserialize;
#[cfg(feature = "aws")]
use serde_json::json;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Why a kind refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// The payload is wrong for this kind or this region (HTTP 422; the op FAILS at once).
    #[error("{0}")]
    Invalid(String),
    /// The target's state forbids it now (HTTP 409 with `code`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("internal error building the write: {0}")]
    Internal(String),
}

/// What the target region offers an effect.
#[cfg(feature = "aws")]
#[derive(Debug, Clone, Copy)]
pub struct EffectContext<'a> {
    pub leases_table: &'a str,
    pub hosts_table: &'a str,
    /// The target region's lease rules (a group's lease must satisfy them).
    pub lease: &'a LeaseConfig,
    pub now_ms: Millis,
}

/// One write of the remote's transaction, what it means when its condition fails, and the
/// result stored and returned when it applies.
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct Effect {
    pub write: TransactWriteItem,
    /// Unconditional writes that join the same transaction after `write` (e.g. `ADD
    /// attention` on the hosts a group change concerns).
    pub notify: Vec<TransactWriteItem>,
    pub on_condition_failed: KindError,
    pub result: Value,
}

pub trait OperationKind: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks the payload's shape against `resource` (no region state needed).
    fn check(&self, resource: &str, payload: &Value) -> Result<(), KindError>;
    /// The write that applies the operation in the target region.
    #[cfg(feature = "aws")]
    fn effect(
        &self,
        ctx: &EffectContext<'_>,
        resource: &str,
        payload: &Value,
    ) -> Result<Effect, KindError>;
}

/// The kinds a region knows, by name.
pub struct Kinds {
    kinds: BTreeMap<&'static str, Box<dyn OperationKind>>,
}

impl Kinds {
    pub fn empty() -> Self {
        Self {
            kinds: BTreeMap::new(),
        }
    }

    /// `group.put` and `group.delete`.
    pub fn shipped() -> Self {
        let mut kinds = Self::empty();
        kinds.register(GroupPut);
        kinds.register(GroupDelete);
        kinds
    }

    pub fn register(&mut self, kind: impl OperationKind + 'static) {
        self.kinds.insert(kind.name(), Box::new(kind));
    }

    pub fn get(&self, name: &str) -> Result<&dyn OperationKind, KindError> {
        self.kinds.get(name).map(|k| k.as_ref()).ok_or_else(|| {
            KindError::Invalid(format!(
                "unknown kind {name:?}; known: {}",
                self.kinds.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, payload: &Value) -> Result<T, KindError> {
    T::deserialize(payload).map_err(|e| KindError::Invalid(format!("{kind} payload: {e}")))
}

fn same_group(kind: &str, resource: &str, group: &GroupId) -> Result<(), KindError> {
    if group.as_str() != resource {
        return Err(KindError::Invalid(format!(
            "{kind}: payload group_id {group} differs from resource {resource}"
        )));
    }
    Ok(())
}

#[cfg(feature = "aws")]
fn internal(e: impl std::fmt::Display) -> KindError {
    KindError::Internal(e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// The core only checks a member's shape; the `aws` effect uses every field.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
struct MemberSpec {
    host_id: HostId,
    az: String,
    #[serde(default)]
    priority: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
struct GroupPutPayload {
    group_id: GroupId,
    lease_ms: Millis,
    members: Vec<MemberSpec>,
}

/// Members a `group.put` may list: the remote's transaction holds the op record, the sequence,
/// the group and one attention write per member, and DynamoDB allows 100 items.
pub(crate) const MAX_PUT_MEMBERS: usize = 97;

/// `group.put`: creates or redefines a replica group (lease length, members). It never
/// touches `holder` or `epoch`, so a live grant keeps running and a group deleted before
/// continues from its tombstone's epoch. The member list is replaced as a whole (drain flags
/// start afresh), and every member is told (`ADD attention`) in the same transaction, so it
/// reads the group at its next poll. A holder dropped from the members keeps its grant and is
/// answered `draining` (it hears of it at its next group read; see `docs/protocol.md`).
pub(crate) struct GroupPut;

impl GroupPut {
    fn parse(resource: &str, payload: &Value) -> Result<GroupPutPayload, KindError> {
        let p: GroupPutPayload = parse("group.put", payload)?;
        same_group("group.put", resource, &p.group_id)?;
        if p.members.is_empty() {
            return Err(KindError::Invalid(
                "group.put: members must not be empty".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for m in &p.members {
            if !seen.insert(&m.host_id) {
                return Err(KindError::Invalid(format!(
                    "group.put: host {} listed twice",
                    m.host_id
                )));
            }
            if m.az.is_empty() || m.az.len() > 64 {
                return Err(KindError::Invalid(format!(
                    "group.put: az of {} must be 1-64 characters",
                    m.host_id
                )));
            }
        }
        if p.lease_ms == 0 {
            return Err(KindError::Invalid("group.put: lease_ms must be > 0".into()));
        }
        if p.members.len() > MAX_PUT_MEMBERS {
            return Err(KindError::Invalid(format!(
                "group.put: at most {MAX_PUT_MEMBERS} members (one transaction), got {}",
                p.members.len()
            )));
        }
        Ok(p)
    }
}

impl OperationKind for GroupPut {
    fn name(&self) -> &'static str {
        "group.put"
    }

    fn check(&self, resource: &str, payload: &Value) -> Result<(), KindError> {
        Self::parse(resource, payload).map(|_| ())
    }

    #[cfg(feature = "aws")]
    fn effect(
        &self,
        ctx: &EffectContext<'_>,
        resource: &str,
        payload: &Value,
    ) -> Result<Effect, KindError> {
        let p = Self::parse(resource, payload)?;
        ctx.lease
            .check_group_lease(p.lease_ms)
            .map_err(|e| KindError::Invalid(format!("group.put: {e} in the target region")))?;
        let members: BTreeMap<HostId, Member> = p
            .members
            .into_iter()
            .map(|m| (m.host_id, Member::new(m.az, m.priority)))
            .collect();
        let count = members.len();
        // The lease store's own upsert, so `Leases` has one owner of its expressions.
        let definition = GroupDefinition {
            group_id: p.group_id.clone(),
            lease_ms: p.lease_ms,
            members,
        };
        let mut writes = group_definition_writes(
            ctx.leases_table,
            ctx.hosts_table,
            &definition,
            PutMode::Upsert,
            ctx.now_ms,
        )
        .map_err(internal)?
        .into_iter();
        let write = writes
            .next()
            .ok_or_else(|| internal("group.put built no write"))?;
        Ok(Effect {
            write,
            notify: writes.collect(),
            on_condition_failed: KindError::Internal("group.put has no condition".into()),
            result: json!({"group_id": p.group_id, "lease_ms": p.lease_ms, "members": count}),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDeletePayload {
    group_id: GroupId,
}

/// `group.delete`: tombstones a replica group, only while it has no live grant: free, or a
/// v1 lease lapsed by more than the clock skew. The item stays with its epoch (`deleted`, no
/// members, no holder), so a group created again under the same id continues from it and a
/// fence never sees an epoch go back. A group held under v2 is refused (`lease_held`) even if
/// its holder was revoked: telling that needs the holder's host record, which this one-write
/// effect cannot read; `tenurectl groups delete` revokes a lapsed holder and deletes.
pub(crate) struct GroupDelete;

impl OperationKind for GroupDelete {
    fn name(&self) -> &'static str {
        "group.delete"
    }

    fn check(&self, resource: &str, payload: &Value) -> Result<(), KindError> {
        let p: GroupDeletePayload = parse("group.delete", payload)?;
        same_group("group.delete", resource, &p.group_id)
    }

    #[cfg(feature = "aws")]
    fn effect(
        &self,
        ctx: &EffectContext<'_>,
        resource: &str,
        payload: &Value,
    ) -> Result<Effect, KindError> {
        let p: GroupDeletePayload = parse("group.delete", payload)?;
        same_group("group.delete", resource, &p.group_id)?;
        // A v1 lease counts as lapsed only past the clock skew, as everywhere else.
        let plan = BlindDeletePlan {
            not_after_ms: ctx.now_ms.saturating_sub(ctx.lease.clock_skew_ms),
            now: ctx.now_ms,
        };
        let write = blind_delete_write(ctx.leases_table, &p.group_id, &plan).map_err(internal)?;
        Ok(Effect {
            write,
            notify: Vec::new(),
            on_condition_failed: KindError::Conflict {
                code: "lease_held",
                message: format!(
                    "group {} has a live grant (or does not exist); drain it first",
                    p.group_id
                ),
            },
            result: json!({"group_id": p.group_id, "deleted": true}),
        })
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn ctx(lease: &LeaseConfig) -> EffectContext<'_> {
        EffectContext {
            leases_table: "Leases",
            hosts_table: "Hosts",
            lease,
            now_ms: 1_000_000,
        }
    }

    fn put(lease_ms: u64) -> Value {
        json!({"group_id": "g1", "lease_ms": lease_ms,
               "members": [{"host_id": "a", "az": "use1-az1", "priority": 2},
                           {"host_id": "b", "az": "use1-az2"}]})
    }

    #[test]
    fn group_put_checks_shape_and_region_rules() {
        let kinds = Kinds::shipped();
        let k = kinds.get("group.put").unwrap();
        assert!(k.check("g1", &put(10_000)).is_ok());
        assert!(
            matches!(k.check("g2", &put(10_000)), Err(KindError::Invalid(m)) if m.contains("differs"))
        );
        assert!(k
            .check(
                "g1",
                &json!({"group_id": "g1", "lease_ms": 10000, "members": []})
            )
            .is_err());
        assert!(k
            .check(
                "g1",
                &json!({"group_id": "g1", "lease_ms": 10000, "members": [
            {"host_id": "a", "az": "x"}, {"host_id": "a", "az": "y"}]})
            )
            .is_err());
        assert!(k.check("g1", &json!({"group_id": "g 1"})).is_err());
        assert!(k.check("g1", &json!({"group_id": "g1", "lease_ms": 1, "members": [{"host_id": "a", "az": "x"}], "extra": 1})).is_err());
        // Shape fine, but the target region's rules refuse a 1 s lease (3 x 2 s renewals).
        let lease = LeaseConfig::default();
        assert!(
            matches!(k.effect(&ctx(&lease), "g1", &put(1_000)), Err(KindError::Invalid(m)) if m.contains("target region"))
        );
        let effect = k.effect(&ctx(&lease), "g1", &put(10_000)).unwrap();
        let update = effect.write.update().unwrap();
        assert!(!update.update_expression().contains("holder"));
        assert_eq!(effect.result["members"], 2);
    }

    #[test]
    fn group_delete_tombstones_only_a_free_or_lapsed_v1_group() {
        let lease = LeaseConfig::default();
        let kinds = Kinds::shipped();
        let k = kinds.get("group.delete").unwrap();
        let effect = k
            .effect(&ctx(&lease), "g1", &json!({"group_id": "g1"}))
            .unwrap();
        let update = effect.write.update().unwrap();
        assert!(update.update_expression().contains("SET deleted = :true"));
        assert!(
            !update.update_expression().contains("epoch ="),
            "the tombstone keeps the epoch"
        );
        assert_eq!(
            update.condition_expression(),
            Some(crate::lease::dynamo::BLIND_DELETE_CONDITION)
        );
        assert_eq!(
            update.expression_attribute_values().unwrap()[":not_after"],
            AttributeValue::N((1_000_000 - lease.clock_skew_ms).to_string())
        );
        assert!(matches!(
            effect.on_condition_failed,
            KindError::Conflict {
                code: "lease_held",
                ..
            }
        ));
    }

    #[test]
    fn group_put_tells_every_member_in_the_same_transaction() {
        let lease = LeaseConfig::default();
        let kinds = Kinds::shipped();
        let effect = kinds
            .get("group.put")
            .unwrap()
            .effect(&ctx(&lease), "g1", &put(10_000))
            .unwrap();
        assert_eq!(effect.notify.len(), 2);
        let first = effect.notify[0].update().unwrap();
        assert_eq!(first.table_name(), "Hosts");
        assert!(first.update_expression().starts_with("ADD attention :g"));
    }

    #[test]
    fn unknown_kinds_name_the_known_ones() {
        let err = Kinds::shipped().get("group.rename").err().unwrap();
        assert!(matches!(err, KindError::Invalid(m) if m.contains("group.delete, group.put")));
    }

    #[test]
    fn a_new_kind_is_one_registration() {
        struct Noop;
        impl OperationKind for Noop {
            fn name(&self) -> &'static str {
                "noop"
            }
            fn check(&self, _: &str, _: &Value) -> Result<(), KindError> {
                Ok(())
            }
            fn effect(
                &self,
                _: &EffectContext<'_>,
                _: &str,
                _: &Value,
            ) -> Result<Effect, KindError> {
                Err(KindError::Invalid("noop".into()))
            }
        }
        let mut kinds = Kinds::shipped();
        kinds.register(Noop);
        assert!(kinds.get("noop").is_ok());
    }
}
