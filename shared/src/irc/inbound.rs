//! The target region's side: applying an operation exactly once, in one `TransactWriteItems`:
//!
//! 1. the op's record in `InboundOps` (`attribute_not_exists(op_id)`, payload hash, result);
//! 2. the resource's sequence record (`seq#source_region#resource`), raised to the op's `seq`
//!    only if it is higher than the last applied one;
//! 3. the kind's effect.
//!
//! All three or none: a retried op finds its record (1) and gets the stored result, never a
//! second effect; an op older than one already applied on the resource fails (2) and is
//! recorded as superseded, so ops that overtook each other in flight still leave the newest
//! state.

use super::awaiting::{observe, Observation, RemoteState, Sight, AWAIT_SERVING, DEFAULT_AWAIT_MS};
use super::ids::{OpId, Region};
use super::kinds::{EffectContext, KindError, Kinds};
use super::remote::OperationRequest;
use crate::aws::{get_consistent, n, s};
use crate::ids::GroupId;
use crate::lease::dynamo::DynamoLeaseStore;
use crate::lease::protocol::grant_state;
use crate::lease::store::LeaseStore;
use crate::lease::LeaseConfig;
use crate::Millis;
use crate::StoreError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How an operation was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: &'static str,
    /// The kind's result; for a duplicate, the first answer's `result` as it was (same shape).
    pub result: Value,
    /// For a duplicate, the first answer's outcome (`applied` or `superseded`).
    pub first_outcome: Option<String>,
}

/// The outcome of an op cancelled here before it arrived (its tombstone).
pub const CANCELLED: &str = "cancelled";

/// An op as this region recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    /// SUCCEEDED for every op that is not awaited (and for a tombstone).
    pub state: RemoteState,
    pub outcome: String,
    pub result: Value,
    /// Why an awaited op FAILED (`expired`).
    pub error: Option<String>,
    pub await_for: Option<String>,
    pub deadline_ms: Option<Millis>,
}

impl InboundRecord {
    fn of(item: &crate::aws::Item) -> Self {
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        Self {
            state: text("state")
                .and_then(|st| RemoteState::parse(&st))
                .unwrap_or(RemoteState::Succeeded),
            outcome: text("outcome").unwrap_or_default(),
            result: text("result")
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or(Value::Null),
            error: text("error"),
            await_for: text("await"),
            deadline_ms: match item.get("deadline_ms") {
                Some(AttributeValue::N(v)) => v.parse().ok(),
                _ => None,
            },
        }
    }

    /// The contract's body for this record: the GET's, and a repeated POST's or a cancel's.
    pub fn body(&self, op_id: &OpId, poll_after_ms: Millis) -> Value {
        let mut body = json!({
            "op_id": op_id,
            "state": self.state,
            "outcome": if self.state == RemoteState::InProgress { "accepted" } else { self.outcome.as_str() },
        });
        match self.state {
            RemoteState::InProgress => body["poll_after_ms"] = json!(poll_after_ms),
            RemoteState::Succeeded => body["result"] = self.result.clone(),
            RemoteState::Failed => {
                body["error"] = json!({
                    "code": self.outcome,
                    "message": self.error.clone().unwrap_or_default(),
                })
            }
        }
        body
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kind or payload is wrong (422).
    #[error("{0}")]
    Invalid(String),
    /// Same op_id, other content (409 `op_id_conflict`), or the kind's own conflict (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Retry later (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<KindError> for ApplyError {
    fn from(e: KindError) -> Self {
        match e {
            KindError::Invalid(m) => ApplyError::Invalid(m),
            KindError::Conflict { code, message } => ApplyError::Conflict { code, message },
            KindError::Internal(m) => ApplyError::Store(StoreError::Unavailable {
                operation: "build",
                message: m,
            }),
        }
    }
}

/// The content an op_id stands for: kind, resource, seq and payload (keys sorted by
/// serde_json's map, so equal JSON hashes equally).
pub(crate) fn payload_hash(request: &OperationRequest) -> String {
    let mut h = Sha256::new();
    h.update(request.kind.as_bytes());
    h.update(b"\n");
    h.update(request.resource.as_bytes());
    h.update(b"\n");
    h.update(request.seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(request.payload.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
pub struct InboundStore {
    client: Client,
    inbound_table: String,
    leases_table: String,
    hosts_table: String,
    lease: LeaseConfig,
    kinds: std::sync::Arc<Kinds>,
}

impl InboundStore {
    pub fn new(
        client: Client,
        inbound_table: impl Into<String>,
        leases_table: impl Into<String>,
        hosts_table: impl Into<String>,
        lease: LeaseConfig,
        kinds: Kinds,
    ) -> Self {
        Self {
            client,
            inbound_table: inbound_table.into(),
            leases_table: leases_table.into(),
            hosts_table: hosts_table.into(),
            lease,
            kinds: std::sync::Arc::new(kinds),
        }
    }

    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    fn op_record(
        &self,
        request: &OperationRequest,
        hash: &str,
        outcome: &str,
        result: &Value,
        now: Millis,
    ) -> Result<Put, ApplyError> {
        let mut put = Put::builder();
        // An awaited op, applied, is IN_PROGRESS until it is observed served or expires; its
        // deadline counts from now (the remote owns it). A superseded one is final at once.
        if let (Some(condition), "applied") = (&request.await_for, outcome) {
            let members: Vec<AttributeValue> = request.payload["members"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| m["host_id"].as_str())
                        .map(s)
                        .collect()
                })
                .unwrap_or_default();
            put = put
                .item("state", s(RemoteState::InProgress.as_str()))
                .item("await", s(condition))
                .item(
                    "deadline_ms",
                    n(now + request.await_ms.unwrap_or(DEFAULT_AWAIT_MS)),
                )
                .item("members", AttributeValue::L(members));
        }
        put.table_name(&self.inbound_table)
            .item("op_id", s(request.op_id.as_str()))
            .item("payload_hash", s(hash))
            .item("source_region", s(request.source_region.as_str()))
            .item("kind", s(&request.kind))
            .item("resource", s(&request.resource))
            .item("seq", n(request.seq))
            .item("outcome", s(outcome))
            .item("result", s(&result.to_string()))
            .item("applied_at_ms", n(now))
            .condition_expression("attribute_not_exists(op_id)")
            .build()
            .map_err(|e| KindError::Internal(e.to_string()).into())
    }

    fn seq_key(source: &Region, resource: &str) -> String {
        format!("seq#{source}#{resource}")
    }

    /// Applies `request` once (see the module doc).
    pub async fn apply(
        &self,
        request: &OperationRequest,
        now: Millis,
    ) -> Result<Applied, ApplyError> {
        let kind = self.kinds.get(&request.kind)?;
        let ctx = EffectContext {
            leases_table: &self.leases_table,
            hosts_table: &self.hosts_table,
            lease: &self.lease,
            now_ms: now,
        };
        let effect = kind.effect(&ctx, &request.resource, &request.payload)?;
        let hash = payload_hash(request);
        let record = self.op_record(request, &hash, "applied", &effect.result, now)?;
        let sequence = Update::builder()
            .table_name(&self.inbound_table)
            .key(
                "op_id",
                s(&Self::seq_key(&request.source_region, &request.resource)),
            )
            .update_expression("SET applied_seq = :seq, updated_at_ms = :now")
            .condition_expression("attribute_not_exists(applied_seq) OR applied_seq < :seq")
            .expression_attribute_values(":seq", n(request.seq))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(|e| KindError::Internal(e.to_string()))?;
        // The effect is the third item: the cancellation reasons below are read by position.
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(record).build())
            .transact_items(TransactWriteItem::builder().update(sequence).build())
            .transact_items(effect.write);
        for notify in effect.notify {
            transaction = transaction.transact_items(notify);
        }
        let result = transaction.send().await;
        let err = match result {
            Ok(_) => {
                return Ok(Applied {
                    outcome: "applied",
                    result: effect.result,
                    first_outcome: None,
                })
            }
            Err(e) => e,
        };
        let failed: Vec<bool> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(t)) => t
                .cancellation_reasons()
                .iter()
                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                .collect(),
            _ => Vec::new(),
        };
        match failed.as_slice() {
            [true, ..] => self.existing(request, &hash).await,
            [false, true, ..] => self.supersede(request, &hash, now).await,
            [false, false, true, ..] => Err(effect.on_condition_failed.into()),
            _ => Err(StoreError::from_sdk("TransactWriteItems", err).into()),
        }
    }

    /// The op was seen before: the stored result if it is the same op, 409 otherwise.
    async fn existing(
        &self,
        request: &OperationRequest,
        hash: &str,
    ) -> Result<Applied, ApplyError> {
        let item = get_consistent(
            &self.client,
            &self.inbound_table,
            "op_id",
            request.op_id.as_str(),
        )
        .await?
        .ok_or_else(|| StoreError::Unavailable {
            operation: "GetItem",
            message: format!("op {} vanished", request.op_id),
        })?;
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        // A tombstone: the op was cancelled before it arrived; it never applies here.
        if text("outcome") == CANCELLED {
            return Ok(Applied {
                outcome: CANCELLED,
                result: Value::Null,
                first_outcome: None,
            });
        }
        if text("payload_hash") != hash {
            return Err(ApplyError::Conflict {
                code: "op_id_conflict",
                message: format!(
                    "op {} was already received with other content (kind, resource, seq or payload)",
                    request.op_id
                ),
            });
        }
        let stored: Value = serde_json::from_str(&text("result")).unwrap_or(Value::Null);
        // The first answer's `result` as it was, so a client reads a duplicate exactly like the
        // answer it missed; the first outcome beside it, not wrapped around it.
        Ok(Applied {
            outcome: "duplicate",
            result: stored,
            first_outcome: Some(text("outcome")),
        })
    }

    /// A newer op on the resource was applied first: record this one as superseded.
    async fn supersede(
        &self,
        request: &OperationRequest,
        hash: &str,
        now: Millis,
    ) -> Result<Applied, ApplyError> {
        let result = json!({"superseded": true, "seq": request.seq});
        let record = self.op_record(request, hash, "superseded", &result, now)?;
        let put = self
            .client
            .put_item()
            .table_name(record.table_name())
            .set_item(Some(record.item().clone()))
            .condition_expression("attribute_not_exists(op_id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(Applied {
                outcome: "superseded",
                result,
                first_outcome: None,
            }),
            Err(e) if crate::aws::is_condition_failure(&e) => self.existing(request, hash).await,
            Err(e) => Err(StoreError::from_sdk("PutItem", e).into()),
        }
    }

    /// Where the op stands here, if it was received: for an awaited op in progress, one
    /// observation of its group ([`observe`]); the first that ends it is recorded
    /// (IN_PROGRESS -> SUCCEEDED or FAILED, conditional) and every later read returns that.
    pub async fn status(
        &self,
        op_id: &OpId,
        now: Millis,
    ) -> Result<Option<InboundRecord>, StoreError> {
        let Some(item) =
            get_consistent(&self.client, &self.inbound_table, "op_id", op_id.as_str()).await?
        else {
            return Ok(None);
        };
        let record = InboundRecord::of(&item);
        if record.state != RemoteState::InProgress {
            return Ok(Some(record));
        }
        let observation = self.observe_item(&item, now).await?;
        let (state, outcome, result, error) = match observation {
            Observation::Waiting => return Ok(Some(record)),
            Observation::Serving { holder } => {
                let mut result = record.result.clone();
                result["serving"] = json!({"holder": holder, "observed_at_ms": now});
                (RemoteState::Succeeded, "applied", result, None)
            }
            Observation::Superseded { by_seq } => {
                let mut result = record.result.clone();
                result["superseded_by_seq"] = json!(by_seq);
                (RemoteState::Succeeded, "superseded", result, None)
            }
            Observation::Expired => (
                RemoteState::Failed,
                "expired",
                record.result.clone(),
                Some(format!(
                    "not {} within await_ms: no member this op wrote held a live grant by {}",
                    record.await_for.as_deref().unwrap_or(AWAIT_SERVING),
                    record.deadline_ms.unwrap_or(now)
                )),
            ),
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.inbound_table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(
                "SET #state = :state, outcome = :outcome, #result = :result, observed_at_ms = :now, \
                 #error = :error",
            )
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#result", "result")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":in_progress", s(RemoteState::InProgress.as_str()))
            .expression_attribute_values(":outcome", s(outcome))
            .expression_attribute_values(":result", s(&result.to_string()))
            .expression_attribute_values(":now", n(now));
        update = update.expression_attribute_values(
            ":error",
            match &error {
                Some(e) => s(e),
                None => AttributeValue::Null(true),
            },
        );
        match update.send().await {
            Ok(_) => Ok(Some(InboundRecord {
                state,
                outcome: outcome.to_owned(),
                result,
                error,
                ..record
            })),
            // Someone recorded the end first: theirs stands.
            Err(e) if crate::aws::is_condition_failure(&e) => {
                let item =
                    get_consistent(&self.client, &self.inbound_table, "op_id", op_id.as_str())
                        .await?;
                Ok(item.map(|i| InboundRecord::of(&i)))
            }
            Err(e) => Err(StoreError::from_sdk("UpdateItem(observe)", e)),
        }
    }

    /// One look at an awaited op's group: its applied seq here, its grant.
    async fn observe_item(
        &self,
        item: &crate::aws::Item,
        now: Millis,
    ) -> Result<Observation, StoreError> {
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        let number = |name: &str| match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse::<u64>().ok(),
            _ => None,
        };
        let members: Vec<String> = match item.get("members") {
            Some(AttributeValue::L(list)) => {
                list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
            }
            _ => Vec::new(),
        };
        let source = Region::parse(&text("source_region")).map_err(|e| StoreError::Corrupt {
            item: text("op_id"),
            reason: e.to_string(),
        })?;
        let resource = text("resource");
        let applied_seq = get_consistent(
            &self.client,
            &self.inbound_table,
            "op_id",
            &Self::seq_key(&source, &resource),
        )
        .await?
        .and_then(|seq| match seq.get("applied_seq") {
            Some(AttributeValue::N(v)) => v.parse().ok(),
            _ => None,
        });
        let leases = DynamoLeaseStore::new(
            self.client.clone(),
            self.hosts_table.clone(),
            self.leases_table.clone(),
        );
        let grant = match GroupId::parse(&resource) {
            Ok(group) => match leases.read_group(&group).await? {
                Some(record) if !record.deleted => {
                    let holder = match &record.holder {
                        Some(h) => leases.read_host(h).await?,
                        None => None,
                    };
                    Some(grant_state(&record, holder.as_ref(), now, &self.lease))
                }
                _ => None,
            },
            Err(_) => None,
        };
        Ok(observe(&Sight {
            now,
            deadline_ms: number("deadline_ms").unwrap_or(now),
            seq: number("seq").unwrap_or(0),
            applied_seq,
            members: &members,
            grant: grant.as_ref(),
        }))
    }

    /// Cancels an op here: a tombstone with `attribute_not_exists(op_id)`. If it wins, the op
    /// never applies here (a later POST answers `cancelled`, its seq never raised). If the op
    /// is already here, the cancel is too late and the op's real state is returned.
    pub async fn cancel(
        &self,
        op_id: &OpId,
        source: &Region,
        now: Millis,
    ) -> Result<InboundRecord, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.inbound_table)
            .item("op_id", s(op_id.as_str()))
            .item("outcome", s(CANCELLED))
            .item("source_region", s(source.as_str()))
            .item("result", s("null"))
            .item("applied_at_ms", n(now))
            .condition_expression("attribute_not_exists(op_id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(InboundRecord {
                state: RemoteState::Succeeded,
                outcome: CANCELLED.to_owned(),
                result: Value::Null,
                error: None,
                await_for: None,
                deadline_ms: None,
            }),
            Err(e) if crate::aws::is_condition_failure(&e) => {
                self.status(op_id, now)
                    .await?
                    .ok_or(StoreError::Unavailable {
                        operation: "GetItem",
                        message: format!("op {op_id} vanished"),
                    })
            }
            Err(e) => Err(StoreError::from_sdk("PutItem(tombstone)", e)),
        }
    }

    /// The stored record of an op, if any (tests and operators).
    pub async fn outcome_of(&self, op_id: &OpId) -> Result<Option<String>, StoreError> {
        let item =
            get_consistent(&self.client, &self.inbound_table, "op_id", op_id.as_str()).await?;
        Ok(item.and_then(|i| match i.get("outcome") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payload: Value) -> OperationRequest {
        OperationRequest {
            v: 1,
            op_id: OpId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            source_region: Region::parse("us-east-1").unwrap(),
            kind: "group.delete".into(),
            resource: "g1".into(),
            seq: 3,
            payload,
            await_for: None,
            await_ms: None,
        }
    }

    #[test]
    fn the_hash_covers_content_not_key_order() {
        let a: Value = serde_json::from_str(r#"{"group_id":"g1","x":1}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"x":1,"group_id":"g1"}"#).unwrap();
        assert_eq!(payload_hash(&request(a.clone())), payload_hash(&request(b)));
        let mut other_seq = request(a.clone());
        other_seq.seq = 4;
        assert_ne!(payload_hash(&request(a.clone())), payload_hash(&other_seq));
        assert_ne!(
            payload_hash(&request(a)),
            payload_hash(&request(json!({"group_id": "g2"})))
        );
    }
}
