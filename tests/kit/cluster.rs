//! kvdemo host processes on this machine, each serving the same replica groups, for tests,
//! the failover benchmark and fault campaigns: start, kill -9, pause (SIGSTOP) and resume
//! hosts, watch their roles per group and check their gate logs afterwards.

use crate::fault_proxy::{FaultProxy, Route};
use replica_agent::clock::boot_ns;
use replica_agent::gate_log::{
    read_log, writable_intervals, CheckError, GateEvent, WritableInterval,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure::lease::LeaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("starting {host}: {message}")]
    Start { host: String, message: String },
    #[error("signal to {host}: {source}")]
    Signal {
        host: String,
        source: std::io::Error,
    },
    #[error("no primary of {group} among {hosts:?} within {within:?}")]
    NoPrimary {
        group: String,
        hosts: Vec<String>,
        within: Duration,
    },
    #[error("HTTP to {host}: {message}")]
    Http { host: String, message: String },
    #[error(transparent)]
    Log(#[from] CheckError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Where the hosts find their lease-check and data table.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The kvdemo executable (`env!("CARGO_BIN_EXE_kvdemo")` in tests and benches).
    pub binary: PathBuf,
    /// The groups every host serves.
    pub groups: Vec<String>,
    pub lease_check_url: String,
    pub data_table: String,
    /// The AWS endpoint (MiniStack) and region.
    pub endpoint: String,
    pub region: String,
    /// The region's lease settings, passed to each host as `TENURE_*`.
    pub lease: LeaseConfig,
    /// Gate logs go here.
    pub dir: PathBuf,
    /// Start hosts with `--fault-injection` (per-request store delays).
    pub fault_injection: bool,
    /// Put a [`FaultProxy`] between each host and MiniStack (data table and lease-check).
    pub chaos_proxies: bool,
}

/// One host process.
pub struct HostProcess {
    pub name: String,
    pub addr: String,
    pub log: PathBuf,
    child: Option<Child>,
    /// The host's own proxy to MiniStack, kept across restarts.
    pub proxy: Option<FaultProxy>,
    /// CLOCK_BOOTTIME ns of each kill -9 of a process logging to `log`.
    deaths: Vec<u64>,
}

impl HostProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    spec: ClusterSpec,
    pub hosts: Vec<HostProcess>,
    http: reqwest::Client,
}

/// A host's answer to `GET /groups/{group}/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleStatus {
    pub state: String,
    pub epoch: Option<u64>,
}

/// Above this many groups a host gets them in a file, not on its command line.
const GROUPS_ON_COMMAND_LINE: usize = 50;

impl Cluster {
    /// Where the hosts' gate logs, outputs and groups files are.
    pub fn dir(&self) -> &std::path::Path {
        &self.spec.dir
    }

    /// Starts one process per name (host ids of the group) and waits until each listens.
    pub fn start(spec: ClusterSpec, names: &[&str]) -> Result<Self, ClusterError> {
        let mut cluster = Self {
            spec,
            hosts: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| ClusterError::Http {
                    host: "-".into(),
                    message: e.to_string(),
                })?,
        };
        for name in names {
            let log = cluster.spec.dir.join(format!("{name}.gate.jsonl"));
            let proxy = if cluster.spec.chaos_proxies {
                Some(
                    FaultProxy::start(Route::Upstream(cluster.spec.endpoint.clone())).map_err(
                        |e| ClusterError::Start {
                            host: (*name).to_owned(),
                            message: format!("chaos proxy: {e}"),
                        },
                    )?,
                )
            } else {
                None
            };
            let (child, addr) = cluster.spawn(name, &log, proxy.as_ref())?;
            cluster.hosts.push(HostProcess {
                name: (*name).to_owned(),
                addr,
                log,
                child: Some(child),
                proxy,
                deaths: Vec::new(),
            });
        }
        Ok(cluster)
    }

    fn spawn(
        &self,
        name: &str,
        log: &std::path::Path,
        proxy: Option<&FaultProxy>,
    ) -> Result<(Child, String), ClusterError> {
        let start_error = |message: String| ClusterError::Start {
            host: name.to_owned(),
            message,
        };
        let s = &self.spec;
        let (endpoint, lease_check_url) = match proxy {
            Some(p) => (p.url.clone(), p.rewrite(&s.lease_check_url, &s.endpoint)),
            None => (s.endpoint.clone(), s.lease_check_url.clone()),
        };
        let mut command = Command::new(&s.binary);
        if s.groups.len() > GROUPS_ON_COMMAND_LINE {
            let file = s.dir.join(format!("{name}.groups"));
            std::fs::write(&file, s.groups.join("\n")).map_err(|e| start_error(e.to_string()))?;
            command.arg("--groups-file").arg(file);
        } else {
            command.args(["--groups", &s.groups.join(",")]);
        }
        command
            .args(["--host", name])
            .args(["--lease-check-url", &lease_check_url])
            .args(["--data-table", &s.data_table, "--gate-log"])
            .arg(log)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", &s.region)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("TENURE_LEASE_MS", s.lease.lease_ms.to_string())
            .env(
                "TENURE_RENEW_INTERVAL_MS",
                s.lease.renew_interval_ms.to_string(),
            )
            .env("TENURE_CLOCK_SKEW_MS", s.lease.clock_skew_ms.to_string())
            .env(
                "TENURE_HEARTBEAT_TIMEOUT_MS",
                s.lease.heartbeat_timeout_ms.to_string(),
            )
            .env(
                "TENURE_POLL_INTERVAL_MS",
                s.lease.poll_interval_ms.to_string(),
            )
            .stdout(Stdio::piped());
        if s.fault_injection {
            command.arg("--fault-injection");
        }
        let mut child = command.spawn().map_err(|e| start_error(e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| start_error("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| start_error(e.to_string()))?;
        match line.trim().strip_prefix("listening ") {
            Some(addr) => Ok((child, addr.to_owned())),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(start_error(format!(
                    "did not say where it listens (got {line:?})"
                )))
            }
        }
    }

    /// kill -9 of host `i`; returns CLOCK_BOOTTIME ns just before the signal.
    pub fn kill(&mut self, i: usize) -> Result<u64, ClusterError> {
        let host = &mut self.hosts[i];
        let at = boot_ns();
        if let Some(mut child) = host.child.take() {
            child.kill().map_err(|source| ClusterError::Signal {
                host: host.name.clone(),
                source,
            })?;
            let _ = child.wait();
            host.deaths.push(at);
        }
        Ok(at)
    }

    /// Starts host `i` again after a kill (same name, same log).
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.hosts[i].child.is_some() {
            return Ok(());
        }
        let (name, log) = (self.hosts[i].name.clone(), self.hosts[i].log.clone());
        let (child, addr) = self.spawn(&name, &log, self.hosts[i].proxy.as_ref())?;
        self.hosts[i].child = Some(child);
        self.hosts[i].addr = addr;
        Ok(())
    }

    fn signal(&self, i: usize, signal: libc::c_int) -> Result<(), ClusterError> {
        let host = &self.hosts[i];
        let pid = host.pid().ok_or_else(|| ClusterError::Signal {
            host: host.name.clone(),
            source: std::io::Error::other("not running"),
        })?;
        let pid = libc::pid_t::try_from(pid).map_err(|e| ClusterError::Signal {
            host: host.name.clone(),
            source: std::io::Error::other(e),
        })?;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(ClusterError::Signal {
                host: host.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// SIGSTOP: the process stops dead, mid-request if it was in one.
    pub fn pause(&self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, libc::SIGSTOP)
    }

    /// SIGCONT.
    pub fn resume(&self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, libc::SIGCONT)
    }

    /// The groups every host serves.
    pub fn groups(&self) -> &[String] {
        &self.spec.groups
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.hosts[i].addr)
    }

    /// The host's role in `group`, or `None` if it does not answer.
    pub async fn role(&self, i: usize, group: &str) -> Option<RoleStatus> {
        let body = self.json(i, &format!("/groups/{group}/status")).await?;
        Some(RoleStatus {
            state: body["state"].as_str()?.to_owned(),
            epoch: body["epoch"].as_u64(),
        })
    }

    /// `GET /status` of host `i` (host epoch, primaries, reachable..), or `None`.
    pub async fn host_status(&self, i: usize) -> Option<Value> {
        self.json(i, "/status").await
    }

    /// `GET /metrics` of host `i`: the agent's metrics in Prometheus' text format.
    pub async fn metrics_text(&self, i: usize) -> Result<String, reqwest::Error> {
        self.http
            .get(self.url(i, "/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    /// How many groups host `i` may write now, or `None` if it does not answer.
    pub async fn primaries(&self, i: usize) -> Option<u64> {
        self.host_status(i).await?["primaries"].as_u64()
    }

    async fn json(&self, i: usize, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(self.url(i, path))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&response.bytes().await.ok()?).ok()
    }

    /// Polls every 10 ms until one of `among` says it is primary of `group`; returns its index.
    pub async fn wait_for_primary(
        &self,
        group: &str,
        among: &[usize],
        within: Duration,
    ) -> Result<usize, ClusterError> {
        let started = Instant::now();
        loop {
            for &i in among {
                if self.hosts[i].is_running()
                    && self
                        .role(i, group)
                        .await
                        .is_some_and(|s| s.state == "primary")
                {
                    return Ok(i);
                }
            }
            if started.elapsed() > within {
                return Err(ClusterError::NoPrimary {
                    group: group.to_owned(),
                    hosts: among.iter().map(|&i| self.hosts[i].name.clone()).collect(),
                    within,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls every 10 ms until host `i` may write `n` groups; false after `within`.
    pub async fn wait_for_primaries(&self, i: usize, n: u64, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.primaries(i).await.is_some_and(|p| p >= n) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Polls until host `i` answers with `state` for `group`.
    pub async fn wait_for_state(
        &self,
        i: usize,
        group: &str,
        state: &str,
        within: Duration,
    ) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.role(i, group).await.is_some_and(|s| s.state == state) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `PUT /groups/{group}/kv/{key}`: the status code and JSON body.
    pub async fn put(
        &self,
        i: usize,
        group: &str,
        key: &str,
        value: &str,
    ) -> Result<(u16, Value), ClusterError> {
        self.send(
            i,
            self.http
                .put(self.url(i, &format!("/groups/{group}/kv/{key}")))
                .body(value.to_owned()),
        )
        .await
    }

    /// `GET /groups/{group}/kv/{key}`: the status code and JSON body.
    pub async fn get(
        &self,
        i: usize,
        group: &str,
        key: &str,
    ) -> Result<(u16, Value), ClusterError> {
        self.send(
            i,
            self.http
                .get(self.url(i, &format!("/groups/{group}/kv/{key}"))),
        )
        .await
    }

    /// `POST /step-down` on host `i`: it releases every group and acquires none until resumed.
    pub async fn step_down_host(&self, i: usize) -> Result<(u16, Value), ClusterError> {
        self.send(i, self.http.post(self.url(i, "/step-down")))
            .await
    }

    /// `POST /resume` on host `i`: a candidate again after a whole-host step-down.
    pub async fn resume_host(&self, i: usize) -> Result<(u16, Value), ClusterError> {
        self.send(i, self.http.post(self.url(i, "/resume"))).await
    }

    /// `POST /groups/{group}/step-down` on host `i`.
    pub async fn step_down(&self, i: usize, group: &str) -> Result<(u16, Value), ClusterError> {
        self.send(
            i,
            self.http
                .post(self.url(i, &format!("/groups/{group}/step-down"))),
        )
        .await
    }

    async fn send(
        &self,
        i: usize,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), ClusterError> {
        let http_error = |e: reqwest::Error| ClusterError::Http {
            host: self.hosts[i].name.clone(),
            message: e.to_string(),
        };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(http_error)?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Every host's writable intervals so far, from the gate logs and the kill times.
    pub fn writable_intervals(&self) -> Result<Vec<WritableInterval>, ClusterError> {
        let mut all = Vec::new();
        for host in &self.hosts {
            let events = read_log(&host.log)?;
            // Split the log at each death: a restarted process starts with a closed gate.
            let mut rest: &[GateEvent] = &events;
            for &died in &host.deaths {
                let cut = rest
                    .iter()
                    .position(|e| e.t_ns > died)
                    .unwrap_or(rest.len());
                all.extend(writable_intervals(&rest[..cut], Some(died)));
                rest = &rest[cut..];
            }
            all.extend(writable_intervals(rest, None));
        }
        Ok(all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if let Some(mut child) = host.child.take() {
                // SIGCONT first, in case a test paused it and failed before resuming.
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on our own unreaped child.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
