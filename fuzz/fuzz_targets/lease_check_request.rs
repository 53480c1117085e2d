//! lease-check's Function URL: any method, path and body parse to a call or get a 4xx in the
//! contract's error shape; never a panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tenure::http::ApiRequest;
use tenure::lease::api::{parse_request, LeaseCall};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Mostly the real routes, so the fuzzer reaches the body parsing.
    route: u8,
    group: &'a str,
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
}

fuzz_target!(|input: Input| {
    let path = match input.route % 7 {
        0 => format!("/v1/groups/{}/check", input.group),
        1 => format!("/v1/groups/{}/release", input.group),
        2 => format!("/v1/groups/{}", input.group),
        3 => format!("/v1/hosts/{}/check", input.group),
        4 => format!("/v1/hosts/{}/release", input.group),
        5 => format!("/v1/hosts/{}", input.group),
        _ => input.path.to_owned(),
    };
    let method = match input.route / 7 % 3 {
        0 => "POST",
        1 => "GET",
        _ => input.method,
    };
    let request = ApiRequest {
        method,
        path: &path,
        body: input.body,
    };
    match parse_request(request) {
        Ok(LeaseCall::Check { group, host, .. }) => {
            assert!(!group.as_str().is_empty() && !host.as_str().is_empty())
        }
        Ok(LeaseCall::Release(group, host, _)) => {
            assert!(!group.as_str().is_empty() && !host.as_str().is_empty())
        }
        Ok(LeaseCall::Get(group)) => assert!(!group.as_str().is_empty()),
        Ok(LeaseCall::HostCheck { check, invalid }) => {
            assert!(check.groups.len() + invalid.len() <= 500 && check.watch.len() <= 500);
            assert!(invalid.iter().all(|(raw, _)| tenure::ids::GroupId::parse(raw).is_err()));
        }
        Ok(LeaseCall::HostRelease { groups, invalid, .. }) => {
            assert!(groups.len() + invalid.len() <= 500)
        }
        Ok(LeaseCall::HostGet(host)) => assert!(!host.as_str().is_empty()),
        Err(response) => assert!(response.is_client_error(), "{response:?}"),
    }
});
