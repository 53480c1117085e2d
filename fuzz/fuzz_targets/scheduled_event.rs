//! lease-renewer's and irc-dispatcher's input: any payload the runtime hands over (JSON) is a
//! trigger to log, and any invocation deadline against any clock reading a bounded `Instant`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use tenure::clock::FakeClock;
use tenure::schedule::{deadline_instant, Trigger, MAX_INVOCATION};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    deadline_ms: u64,
    now_ms: u64,
    payload: &'a [u8],
}

fuzz_target!(|input: Input| {
    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(input.payload) {
        let _ = Trigger::of(&event).to_string();
    }
    let before = Instant::now();
    let at = deadline_instant(input.deadline_ms, &FakeClock::at(input.now_ms));
    assert!(at >= before && at <= Instant::now() + MAX_INVOCATION);
});
