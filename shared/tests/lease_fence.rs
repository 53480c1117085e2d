//! Fencing for a primary's own writes, against MiniStack: a write carrying an epoch is refused
//! on an item already written by a newer epoch (`attribute_not_exists(fence) OR fence <=
//! :epoch`), for puts and updates, so a deposed primary's late writes fail.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use support::*;
use tenure::lease::fence::{fence_put, fence_update};
use tenure::lease::record::Epoch;

#[tokio::test]
async fn fenced_writes_refuse_an_older_epoch() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "pk").await;
    let put = |epoch: u64, value: &str| {
        fence_put(
            client
                .put_item()
                .table_name(&table)
                .item("pk", AttributeValue::S("k".into()))
                .item("v", AttributeValue::S(value.into())),
            Epoch(epoch),
        )
        .send()
    };
    assert!(put(2, "first").await.is_ok());
    assert!(put(2, "same epoch again").await.is_ok());
    let stale = put(1, "deposed primary").await;
    assert!(
        stale.is_err(),
        "a write with an older epoch must be refused"
    );
    let update = |epoch: u64| {
        fence_update(
            client
                .update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S("k".into()))
                .update_expression("SET v = :v")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":v", AttributeValue::S(format!("update {epoch}"))),
            Epoch(epoch),
        )
        .send()
    };
    assert!(update(1).await.is_err());
    assert!(update(3).await.is_ok());
    assert!(put(2, "now stale").await.is_err());
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("k".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["v"], AttributeValue::S("update 3".into()));
    assert_eq!(item["fence"], AttributeValue::N("3".into()));
    drop_table(&client, &table).await;
}
