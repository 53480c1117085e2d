//! irc-worker's input: an SQS event decoded as the runtime decodes it, then each record's body
//! as the worker decodes it. A body that is not a work message gets a reason (logged, and the
//! record goes on to the DLQ); never a panic.
#![no_main]

use aws_lambda_events::event::sqs::SqsEvent;
use libfuzzer_sys::fuzz_target;
use tenure::irc::message::QueueMessage;

fn check_body(body: Option<&str>) {
    match QueueMessage::decode(body) {
        Ok(message) => {
            // What decodes, encodes and decodes to the same message.
            let again = QueueMessage::decode(Some(&message.encode()));
            assert_eq!(again.ok(), Some(message));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    // The body alone (most of the surface), then the whole event.
    check_body(std::str::from_utf8(data).ok());
    if let Ok(event) = serde_json::from_slice::<SqsEvent>(data) {
        for record in &event.records {
            check_body(record.body.as_deref());
        }
    }
});
