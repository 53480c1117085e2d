//! The queue message: `{"v":1,"op_id":...,"target_region":...}`, MessageGroupId
//! `target_region#resource` so SQS FIFO keeps ops on one resource in order. The body names the
//! item; everything else is read from the item when it is claimed.

use super::ids::{OpId, Region};
use serde::{Deserialize, Serialize};

pub(crate) const MESSAGE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMessage {
    pub v: u32,
    pub op_id: OpId,
    pub target_region: Region,
}

/// Why a message body was refused (the record fails alone and reaches the DLQ).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not a valid work message: {0}")]
    Malformed(String),
    #[error("message version {0} is not supported (expected {MESSAGE_VERSION})")]
    Version(u32),
    #[error("message has no body")]
    Empty,
}

impl QueueMessage {
    pub fn new(op_id: OpId, target_region: Region) -> Self {
        Self {
            v: MESSAGE_VERSION,
            op_id,
            target_region,
        }
    }

    pub fn decode(body: Option<&str>) -> Result<Self, MessageError> {
        let body = body.ok_or(MessageError::Empty)?;
        let message: QueueMessage =
            serde_json::from_str(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
        if message.v != MESSAGE_VERSION {
            return Err(MessageError::Version(message.v));
        }
        Ok(message)
    }

    pub fn encode(&self) -> String {
        serde_json::json!({"v": self.v, "op_id": self.op_id, "target_region": self.target_region})
            .to_string()
    }
}

/// The FIFO message group of an operation: one group per (target region, resource).
pub fn message_group(target_region: &Region, resource: &str) -> String {
    format!("{target_region}#{resource}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_a_message() {
        let m = QueueMessage::new(OpId::new(), Region::parse("eu-west-1").unwrap());
        assert_eq!(QueueMessage::decode(Some(&m.encode())), Ok(m));
        assert_eq!(QueueMessage::decode(None), Err(MessageError::Empty));
        assert!(matches!(
            QueueMessage::decode(Some("{\"v\":2,\"op_id\":\"01ARZ3NDEKTSV4RRFFQ69G5FAV\",\"target_region\":\"eu-west-1\"}")),
            Err(MessageError::Version(2))
        ));
        assert!(matches!(
            QueueMessage::decode(Some(
                "{\"v\":1,\"op_id\":\"x\",\"target_region\":\"eu-west-1\"}"
            )),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            QueueMessage::decode(Some("not json")),
            Err(MessageError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(body in "\\PC{0,200}") {
            let _ = QueueMessage::decode(Some(&body));
        }
    }
}
