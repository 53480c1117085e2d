//! irc-remote's Function URL: any method, path and body parse to an operation (envelope and
//! the kind's payload check passed) or get a 4xx in the contract's error shape; never a panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::sync::OnceLock;
use tenure::http::ApiRequest;
use tenure::irc::kinds::Kinds;
use tenure::irc::remote_api::parse_request;
use tenure::irc::Region;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Mostly the real route, so the fuzzer reaches the envelope and payload checks.
    route: u8,
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
}

fn peers() -> &'static BTreeSet<Region> {
    static PEERS: OnceLock<BTreeSet<Region>> = OnceLock::new();
    PEERS.get_or_init(|| {
        ["us-east-1", "eu-west-1"]
            .into_iter()
            .filter_map(|r| Region::parse(r).ok())
            .collect()
    })
}

fuzz_target!(|input: Input| {
    let (method, path) = match input.route % 4 {
        0 | 1 => ("POST", "/v1/operations"),
        2 => ("POST", input.path),
        _ => (input.method, input.path),
    };
    let request = ApiRequest {
        method,
        path,
        body: input.body,
    };
    match parse_request(request, peers(), &Kinds::shipped()) {
        Ok(op) => {
            assert!(op.seq >= 1 && op.payload.is_object());
            assert!(peers().contains(&op.source_region));
        }
        Err(response) => assert!(response.is_client_error(), "{response:?}"),
    }
});
