//! Fencing for a primary's own writes. A deposed primary may still be running (paused, cut
//! off) when its successor starts writing; every write carries the writer's epoch and the
//! storage refuses an epoch lower than one it has already seen, so the old primary's late
//! writes fail instead of overwriting newer data.

use super::record::Epoch;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::builders::{PutBuilder, UpdateBuilder};
use aws_sdk_dynamodb::types::AttributeValue;

/// The attribute that stores the highest epoch that has written an item.
pub(crate) const FENCE_ATTRIBUTE: &str = "fence";
const NAME: &str = "#tenure_fence";
const VALUE: &str = ":tenure_fence_epoch";

/// The fencing condition (`docs/protocol.md`): `attribute_not_exists(fence) OR fence <= :epoch`, joined to the
/// caller's own condition (if any) with AND.
pub(crate) fn fenced_condition(existing: Option<&str>) -> String {
    let fence = format!("(attribute_not_exists({NAME}) OR {NAME} <= {VALUE})");
    match existing {
        Some(own) if !own.trim().is_empty() => format!("({own}) AND {fence}"),
        _ => fence,
    }
}

/// Adds `SET fence = :epoch` to an update expression, merging with its SET clause if it has one.
pub(crate) fn fenced_update_expression(existing: Option<&str>) -> String {
    let set = format!("{NAME} = {VALUE}");
    let Some(own) = existing.filter(|e| !e.trim().is_empty()) else {
        return format!("SET {set}");
    };
    let upper = own.to_ascii_uppercase();
    let set_clause = upper
        .match_indices("SET ")
        .find(|(i, _)| *i == 0 || upper.as_bytes()[i - 1].is_ascii_whitespace())
        .map(|(i, _)| i);
    match set_clause {
        Some(i) => format!("{}SET {set}, {}", &own[..i], &own[i + 4..]),
        None => format!("SET {set} {own}"),
    }
}

/// Makes a PutItem fenced: stores the epoch on the item and refuses to replace an item written
/// by a newer epoch.
pub fn fence_put(builder: PutItemFluentBuilder, epoch: Epoch) -> PutItemFluentBuilder {
    let condition = fenced_condition(builder.get_condition_expression().as_deref());
    builder
        .item(FENCE_ATTRIBUTE, AttributeValue::N(epoch.0.to_string()))
        .condition_expression(condition)
        .expression_attribute_names(NAME, FENCE_ATTRIBUTE)
        .expression_attribute_values(VALUE, AttributeValue::N(epoch.0.to_string()))
}

/// Makes an UpdateItem fenced: sets the epoch on the item and refuses to touch an item written
/// by a newer epoch.
pub fn fence_update(builder: UpdateItemFluentBuilder, epoch: Epoch) -> UpdateItemFluentBuilder {
    let condition = fenced_condition(builder.get_condition_expression().as_deref());
    let update = fenced_update_expression(builder.get_update_expression().as_deref());
    builder
        .update_expression(update)
        .condition_expression(condition)
        .expression_attribute_names(NAME, FENCE_ATTRIBUTE)
        .expression_attribute_values(VALUE, AttributeValue::N(epoch.0.to_string()))
}

/// [`fence_put`] for a `Put` inside `TransactWriteItems`.
pub fn fence_transact_put(builder: PutBuilder, epoch: Epoch) -> PutBuilder {
    let condition = fenced_condition(builder.get_condition_expression().as_deref());
    builder
        .item(FENCE_ATTRIBUTE, AttributeValue::N(epoch.0.to_string()))
        .condition_expression(condition)
        .expression_attribute_names(NAME, FENCE_ATTRIBUTE)
        .expression_attribute_values(VALUE, AttributeValue::N(epoch.0.to_string()))
}

/// [`fence_update`] for an `Update` inside `TransactWriteItems`. Typically used on one fence
/// item per replica group, so that a write of *any* key by a newer epoch stops every later
/// write of an older one (a per-item fence only protects the items the newer epoch touched).
pub fn fence_transact_update(builder: UpdateBuilder, epoch: Epoch) -> UpdateBuilder {
    let condition = fenced_condition(builder.get_condition_expression().as_deref());
    let update = fenced_update_expression(builder.get_update_expression().as_deref());
    builder
        .update_expression(update)
        .condition_expression(condition)
        .expression_attribute_names(NAME, FENCE_ATTRIBUTE)
        .expression_attribute_values(VALUE, AttributeValue::N(epoch.0.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_joins_the_callers_own() {
        assert_eq!(
            fenced_condition(None),
            "(attribute_not_exists(#tenure_fence) OR #tenure_fence <= :tenure_fence_epoch)"
        );
        assert!(fenced_condition(Some("attribute_exists(pk)"))
            .starts_with("(attribute_exists(pk)) AND (attribute_not_exists"));
    }

    #[test]
    fn update_expression_merges_into_an_existing_set() {
        assert_eq!(
            fenced_update_expression(Some("SET v = :v")),
            "SET #tenure_fence = :tenure_fence_epoch, v = :v"
        );
        assert_eq!(
            fenced_update_expression(Some("REMOVE old SET v = :v")),
            "REMOVE old SET #tenure_fence = :tenure_fence_epoch, v = :v"
        );
        assert_eq!(
            fenced_update_expression(Some("REMOVE old")),
            "SET #tenure_fence = :tenure_fence_epoch REMOVE old"
        );
        assert_eq!(
            fenced_update_expression(None),
            "SET #tenure_fence = :tenure_fence_epoch"
        );
        // An attribute whose name ends in "set" is not a SET clause.
        assert_eq!(
            fenced_update_expression(Some("REMOVE asset")),
            "SET #tenure_fence = :tenure_fence_epoch REMOVE asset"
        );
    }
}
