//! Who may speak for whom: the caller's IAM identity, as the Function URL event carries it
//! (`requestContext.authorizer.iam`, AWS_IAM auth), bound to the host id a lease-check request
//! acts for and to the `source_region` an irc-remote request claims.
//!
//! Without a binding, any principal allowed to invoke lease-check could heartbeat, check or
//! release as any host: keep a dead host's lease alive, or release a live primary's groups.
//! The rule is a stack parameter; a stack that turns it off says so at start-up (the local
//! emulator puts no caller into its events, so local stacks run with it off, explicitly).
//!
//! Pure: the rules take the caller and the claimed name, so fixtures in the shape AWS
//! documents test them without AWS.

use crate::config::{EnvError, EnvSource};
use crate::http::ApiResponse;
use crate::ids::HostId;
use crate::irc::Region;
use std::collections::BTreeMap;

/// The caller as IAM authenticated it (`requestContext.authorizer.iam`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// `arn:aws:sts::111122223333:assumed-role/ROLE/SESSION` for a role session,
    /// `arn:aws:iam::111122223333:user/NAME` for a user.
    pub user_arn: Option<String>,
    pub account_id: Option<String>,
}

/// An assumed-role session, read from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleSession<'a> {
    account: &'a str,
    role: &'a str,
    session: &'a str,
}

/// A global ARN of `service` (no region): its account and resource,
/// `arn:<partition>:<service>::<account>:<resource>`.
fn global_arn<'a>(arn: &'a str, service: &str) -> Option<(&'a str, &'a str)> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_partition), Some(s), Some(""), Some(account), Some(resource))
            if s == service && !account.is_empty() =>
        {
            Some((account, resource))
        }
        _ => None,
    }
}

impl Caller {
    fn role_session(&self) -> Option<RoleSession<'_>> {
        let (account, resource) = global_arn(self.user_arn.as_deref()?, "sts")?;
        let mut resource = resource.splitn(3, '/');
        match (resource.next(), resource.next(), resource.next()) {
            (Some("assumed-role"), Some(role), Some(session))
                if !role.is_empty() && !session.is_empty() =>
            {
                Some(RoleSession {
                    account,
                    role,
                    session,
                })
            }
            _ => None,
        }
    }

    fn describe(&self) -> &str {
        self.user_arn.as_deref().unwrap_or("an unnamed principal")
    }
}

/// Why a caller may not do what it asked (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the request carries no caller identity (requestContext.authorizer.iam), and this stack binds callers to what they act for")]
    MissingIdentity,
    #[error("{caller} may not act as host {host}: the rule is that the assumed-role session name is the host id")]
    OtherHost { caller: String, host: HostId },
    #[error("{caller} may not send operations as region {region}: only {expected} may")]
    OtherRegion {
        caller: String,
        region: Region,
        expected: String,
    },
    #[error("no worker role is configured for region {region} (PeerWorkerRoles), so no caller may send operations as it")]
    UnknownRegion { region: Region },
}

impl Denied {
    pub fn code(&self) -> &'static str {
        match self {
            Denied::MissingIdentity => "missing_identity",
            Denied::OtherHost { .. } => "not_this_host",
            Denied::OtherRegion { .. } | Denied::UnknownRegion { .. } => "not_this_region",
        }
    }

    /// The contract's error shape, 403.
    pub fn response(&self) -> ApiResponse {
        ApiResponse::error(403, self.code(), self.to_string())
    }
}

/// How lease-check binds a caller to the host it acts for (`TENURE_HOST_IDENTITY_RULE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIdentityRule {
    /// The caller is an assumed-role session whose session name is the host id (each host
    /// assumes its role with `--role-session-name <host_id>`).
    SessionName,
    /// No binding: any caller allowed to invoke may act as any host.
    Off,
}

impl HostIdentityRule {
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        const NAME: &str = "TENURE_HOST_IDENTITY_RULE";
        match env.get(NAME).as_deref() {
            Some("session-name") => Ok(Self::SessionName),
            Some("off") => {
                tracing::warn!("caller identity is not checked ({NAME}=off): any caller allowed to invoke lease-check may act as any host");
                Ok(Self::Off)
            }
            Some(other) => Err(EnvError::Invalid {
                name: NAME,
                value: other.to_owned(),
                reason: "must be session-name or off".into(),
            }),
            // Explicit on purpose: a stack never runs unbound because a variable was left out.
            None => Err(EnvError::Missing { name: NAME }),
        }
    }

    /// May `caller` act as `host`?
    pub fn authorize(&self, caller: Option<&Caller>, host: &HostId) -> Result<(), Denied> {
        match self {
            Self::Off => Ok(()),
            Self::SessionName => {
                let caller = caller.ok_or(Denied::MissingIdentity)?;
                match caller.role_session() {
                    Some(s) if s.session == host.as_str() => Ok(()),
                    _ => Err(Denied::OtherHost {
                        caller: caller.describe().to_owned(),
                        host: host.clone(),
                    }),
                }
            }
        }
    }
}

/// An IAM role, as configured: its account and name (an assumed-role ARN drops the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRef {
    pub arn: String,
    account: String,
    name: String,
}

impl RoleRef {
    /// `arn:<partition>:iam::<account>:role/[<path>/]<name>`.
    pub fn parse(arn: &str) -> Result<Self, String> {
        match global_arn(arn, "iam") {
            Some((account, resource)) if resource.starts_with("role/") => {
                let name = resource.rsplit('/').next().unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("{arn:?} names no role"));
                }
                Ok(Self {
                    arn: arn.to_owned(),
                    account: account.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "{arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            )),
        }
    }
}

/// How irc-remote binds a caller to the `source_region` it claims
/// (`TENURE_PEER_IDENTITY_RULE`, `TENURE_PEER_WORKER_ROLES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentityRule {
    /// The caller is a session of the worker role configured for that region.
    WorkerRole(BTreeMap<Region, RoleRef>),
    Off,
}

impl PeerIdentityRule {
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        const RULE: &str = "TENURE_PEER_IDENTITY_RULE";
        const ROLES: &str = "TENURE_PEER_WORKER_ROLES";
        match env.get(RULE).as_deref() {
            Some("off") => {
                tracing::warn!("caller identity is not checked ({RULE}=off): any caller allowed to invoke irc-remote may send operations as any peer region");
                Ok(Self::Off)
            }
            Some("worker-role") => {
                let raw = env.get(ROLES).unwrap_or_else(|| "{}".to_owned());
                let invalid = |reason: String| EnvError::Invalid {
                    name: ROLES,
                    value: raw.clone(),
                    reason,
                };
                let map: BTreeMap<String, String> = serde_json::from_str(&raw).map_err(|e| {
                    invalid(format!("must be a JSON object region -> role ARN: {e}"))
                })?;
                let mut roles = BTreeMap::new();
                for (region, arn) in map {
                    let region = Region::parse(&region).map_err(|e| invalid(e.to_string()))?;
                    roles.insert(region, RoleRef::parse(&arn).map_err(invalid)?);
                }
                Ok(Self::WorkerRole(roles))
            }
            Some(other) => Err(EnvError::Invalid {
                name: RULE,
                value: other.to_owned(),
                reason: "must be worker-role or off".into(),
            }),
            None => Err(EnvError::Missing { name: RULE }),
        }
    }

    /// May `caller` send operations as `region`?
    pub fn authorize(&self, caller: Option<&Caller>, region: &Region) -> Result<(), Denied> {
        let Self::WorkerRole(roles) = self else {
            return Ok(());
        };
        let caller = caller.ok_or(Denied::MissingIdentity)?;
        let role = roles.get(region).ok_or_else(|| Denied::UnknownRegion {
            region: region.clone(),
        })?;
        match caller.role_session() {
            Some(s) if s.account == role.account && s.role == role.name => Ok(()),
            _ => Err(Denied::OtherRegion {
                caller: caller.describe().to_owned(),
                region: region.clone(),
                expected: role.arn.clone(),
            }),
        }
    }
}

/// The caller of a Function URL request, when the event carries one.
#[cfg(feature = "lambda")]
pub fn caller_of(request: &lambda_http::Request) -> Option<Caller> {
    use lambda_http::RequestExt;
    let iam = request.request_context_ref()?.authorizer()?.iam.as_ref()?;
    Some(Caller {
        user_arn: iam.user_arn.clone(),
        account_id: iam.account_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role: &str, name: &str) -> Caller {
        Caller {
            user_arn: Some(format!(
                "arn:aws:sts::111122223333:assumed-role/{role}/{name}"
            )),
            account_id: Some("111122223333".into()),
        }
    }

    fn host(id: &str) -> HostId {
        HostId::parse(id).unwrap()
    }

    fn region(r: &str) -> Region {
        Region::parse(r).unwrap()
    }

    #[test]
    fn a_host_session_may_act_only_as_its_own_host() {
        let rule = HostIdentityRule::SessionName;
        let a = session("replica-hosts", "host-a");
        assert_eq!(rule.authorize(Some(&a), &host("host-a")), Ok(()));
        let denied = rule.authorize(Some(&a), &host("host-b")).unwrap_err();
        assert_eq!(denied.code(), "not_this_host");
        assert_eq!(denied.response().status, 403);
        assert!(denied.to_string().contains("host-b"), "{denied}");
    }

    #[test]
    fn a_user_or_a_missing_identity_is_refused_when_the_rule_is_on() {
        let rule = HostIdentityRule::SessionName;
        let user = Caller {
            user_arn: Some("arn:aws:iam::111122223333:user/host-a".into()),
            account_id: None,
        };
        assert_eq!(
            rule.authorize(Some(&user), &host("host-a"))
                .unwrap_err()
                .code(),
            "not_this_host"
        );
        assert_eq!(
            rule.authorize(None, &host("host-a")),
            Err(Denied::MissingIdentity)
        );
        assert_eq!(
            HostIdentityRule::Off.authorize(None, &host("host-a")),
            Ok(())
        );
    }

    #[test]
    fn role_session_arns_are_read_strictly() {
        let parse = |arn: &str| {
            Caller {
                user_arn: Some(arn.into()),
                account_id: None,
            }
            .role_session()
            .map(|s| {
                (
                    s.account.to_owned(),
                    s.role.to_owned(),
                    s.session.to_owned(),
                )
            })
        };
        assert_eq!(
            parse("arn:aws-cn:sts::1:assumed-role/r/s@x.y"),
            Some(("1".into(), "r".into(), "s@x.y".into()))
        );
        assert_eq!(parse("arn:aws:sts::1:assumed-role/r"), None);
        assert_eq!(parse("arn:aws:sts::1:assumed-role/r/"), None);
        assert_eq!(parse("arn:aws:iam::1:role/r/s"), None);
        assert_eq!(parse("arn:aws:sts:us-east-1:1:assumed-role/r/s"), None);
        assert_eq!(parse("not an arn"), None);
    }

    fn worker_roles() -> PeerIdentityRule {
        let env = [
            ("TENURE_PEER_IDENTITY_RULE", "worker-role"),
            (
                "TENURE_PEER_WORKER_ROLES",
                r#"{"us-east-1":"arn:aws:iam::111122223333:role/tenure/use1-IrcWorkerRole-X","eu-west-1":"arn:aws:iam::111122223333:role/euw1-IrcWorkerRole-Y"}"#,
            ),
        ];
        PeerIdentityRule::from_env(&env[..]).unwrap()
    }

    #[test]
    fn a_worker_may_send_only_as_its_own_region() {
        let rule = worker_roles();
        let use1 = session("use1-IrcWorkerRole-X", "worker-session");
        assert_eq!(rule.authorize(Some(&use1), &region("us-east-1")), Ok(()));
        let denied = rule
            .authorize(Some(&use1), &region("eu-west-1"))
            .unwrap_err();
        assert_eq!(denied.code(), "not_this_region");
        assert!(
            denied.to_string().contains("euw1-IrcWorkerRole-Y"),
            "{denied}"
        );
        assert_eq!(
            rule.authorize(Some(&use1), &region("ap-southeast-2")),
            Err(Denied::UnknownRegion {
                region: region("ap-southeast-2")
            })
        );
        assert_eq!(
            rule.authorize(None, &region("us-east-1")),
            Err(Denied::MissingIdentity)
        );
    }

    #[test]
    fn a_role_of_the_same_name_in_another_account_is_refused() {
        let rule = worker_roles();
        let other = Caller {
            user_arn: Some("arn:aws:sts::999999999999:assumed-role/use1-IrcWorkerRole-X/s".into()),
            account_id: Some("999999999999".into()),
        };
        assert_eq!(
            rule.authorize(Some(&other), &region("us-east-1"))
                .unwrap_err()
                .code(),
            "not_this_region"
        );
    }

    #[test]
    fn the_rules_must_be_named_and_valid() {
        let empty: [(&str, &str); 0] = [];
        assert!(matches!(
            HostIdentityRule::from_env(&empty[..]),
            Err(EnvError::Missing { .. })
        ));
        assert!(PeerIdentityRule::from_env(&empty[..]).is_err());
        let bad = [("TENURE_HOST_IDENTITY_RULE", "sessionname")];
        assert!(HostIdentityRule::from_env(&bad[..])
            .unwrap_err()
            .to_string()
            .contains("session-name or off"));
        let bad_role = [
            ("TENURE_PEER_IDENTITY_RULE", "worker-role"),
            (
                "TENURE_PEER_WORKER_ROLES",
                r#"{"us-east-1":"arn:aws:iam::1:user/x"}"#,
            ),
        ];
        assert!(PeerIdentityRule::from_env(&bad_role[..])
            .unwrap_err()
            .to_string()
            .contains("TENURE_PEER_WORKER_ROLES"));
        let off = [("TENURE_PEER_IDENTITY_RULE", "off")];
        assert_eq!(
            PeerIdentityRule::from_env(&off[..]).unwrap(),
            PeerIdentityRule::Off
        );
    }
}
