//! DynamoDB stream records as Lambda delivers them (JSON, images in DynamoDB's attribute-value
//! shape), read into the records they hold.

use serde::de::DeserializeOwned;

/// A record's old and new images as `T` (absent, or an empty image, is `None`). An image that
/// is not a `T` is an error naming which image, for the log: the caller skips that record
/// rather than block its shard for good.
pub fn images<T: DeserializeOwned>(
    record: &serde_json::Value,
) -> Result<(Option<T>, Option<T>), String> {
    let image = |name: &str| -> Result<Option<T>, String> {
        match record["dynamodb"].get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(raw) => {
                let item: serde_dynamo::Item = serde_json::from_value(raw.clone())
                    .map_err(|e| format!("{name} is not a DynamoDB item: {e}"))?;
                if item.is_empty() {
                    return Ok(None);
                }
                serde_dynamo::from_item(item)
                    .map(Some)
                    .map_err(|e| format!("{name} is not the table's item: {e}"))
            }
        }
    };
    Ok((image("OldImage")?, image("NewImage")?))
}

/// The records of a stream event Lambda delivered (none if it has no `Records` list).
pub fn records(event: &serde_json::Value) -> &[serde_json::Value] {
    event["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_the_events_list_or_none() {
        let event = serde_json::json!({"Records": [{"eventID": "1"}, {"eventID": "2"}]});
        assert_eq!(super::records(&event).len(), 2);
        assert!(super::records(&serde_json::json!({})).is_empty());
        assert!(super::records(&serde_json::json!({"Records": "x"})).is_empty());
    }
}
