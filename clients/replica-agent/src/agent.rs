//! `HostAgent`: one poller per database host for all its groups (protocol v2), and the
//! lock-free gates its write path reads.
//!
//! The poller task owns all I/O: it sends the checks [`HostPoll`] plans, enacts each answer's
//! [`Effects`] on the [`Grants`] table, sends releases, and publishes role changes. The host's
//! write path calls [`HostAgent::write_permit`], which reads a few atomics and the deadline
//! clock, nothing else.

use crate::clock::{BootClock, DeadlineClock};
use crate::config::AgentConfig;
use crate::grants::{Grants, WritePermit};
use crate::metrics;
use crate::poll::{Effects, GroupView, HostPoll};
use crate::source::{HostSource, SourceError};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::client::HostCheckBody;
use tenure::lease::Epoch;
use tokio::sync::{broadcast, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{info, warn};

/// What this host is for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRole {
    /// May write, stamping writes with `epoch`, until `deadline_ns` on the deadline clock.
    Primary { epoch: Epoch, deadline_ns: u64 },
    /// Another host holds the group (or nobody does yet).
    Secondary {
        holder: Option<HostId>,
        epoch: Epoch,
    },
    /// No fresh answer (lease-check unreachable, the group's own error, or not asked yet):
    /// read-only, still polling, and never to be read as "lost".
    Unknown { reason: String },
}

/// A change of one group's role, as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub group: GroupId,
    pub role: GroupRole,
}

/// Given to the grant hook *before* the gates open on it (so before any write can use it), and
/// *after* a gate closed but before its release is sent (so before another host can acquire the
/// group). An audit log written from the hook can only overstate when the host could write,
/// never understate it, which is what a checker of "never two writable hosts" needs; and a
/// handover's close is on record before the next holder's open, so the checker can prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantNotice<'a> {
    /// Every group open under `host_epoch` may be written until `deadline_ns`.
    Window { host_epoch: Epoch, deadline_ns: u64 },
    /// `group` opens at `epoch` under `host_epoch` (until the window's deadline).
    Open {
        group: &'a GroupId,
        epoch: Epoch,
        host_epoch: Epoch,
    },
    /// `group`'s gate is closed (a step-down, a drain, or the group left the host); its
    /// release, if any, is sent after this notice.
    Closed { group: &'a GroupId },
}

/// Called with every grant notice; keep it short, it runs on the poller task.
pub type GrantHook = Arc<dyn Fn(&GrantNotice<'_>) + Send + Sync>;

/// The host as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub host: HostId,
    pub incarnation: Incarnation,
    pub host_epoch: Option<Epoch>,
    /// The host window's deadline, while one is open.
    pub deadline_ns: Option<u64>,
    /// The last check was answered.
    pub reachable: bool,
    pub last_error: Option<String>,
    /// Late checks in a row stopped the heartbeat.
    pub silenced: bool,
    /// The whole host stepped down.
    pub standby: bool,
    /// Groups open now.
    pub primaries: usize,
    /// Polls since start (each is one check, or more when over 500 groups must be read).
    pub polls: u64,
    /// Checks sent since start, and how many of them failed (no answer in time, or an error).
    pub checks: u64,
    pub check_failures: u64,
}

/// Where a step-down's outcome goes.
type StepDownReply = oneshot::Sender<Result<(), SourceError>>;

/// A step-down asked for by the host application, picked up by the poller.
struct StepDown {
    /// `None`: the whole host.
    group: Option<GroupId>,
    at_ns: u64,
    reply: StepDownReply,
}

#[derive(Default)]
struct Control {
    step_downs: Vec<StepDown>,
    resume: bool,
}

struct Published {
    views: HashMap<GroupId, GroupView>,
    status: HostStatus,
}

struct Shared {
    grants: Grants,
    /// Step-downs waiting for the poller. Held by the poller while it applies an answer and
    /// opens gates, and by `step_down` while it registers and closes: so a step-down either
    /// lands before the answer is applied (which then cannot reopen the gate) or after the
    /// gate opened (and closes it).
    control: Mutex<Control>,
    wake: Notify,
    published: Mutex<Published>,
    events: broadcast::Sender<GroupEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update of plain data; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent of one database host: its gates, one per group, and the poller behind them.
pub struct HostAgent<C: DeadlineClock + Clone = BootClock> {
    shared: Arc<Shared>,
    clock: C,
    task: JoinHandle<()>,
}

/// Role-change events buffered per subscriber before it lags (it then re-reads `state`).
const EVENTS: usize = 8_192;

impl HostAgent<BootClock> {
    /// Starts the agent on the production clock with a fresh incarnation.
    pub fn start(
        source: impl HostSource,
        config: AgentConfig,
        healthy: impl Fn() -> bool + Send + Sync + 'static,
        grant_hook: Option<GrantHook>,
    ) -> Self {
        Self::start_with(
            source,
            config,
            healthy,
            grant_hook,
            BootClock,
            new_incarnation(),
        )
    }
}

/// A new process's incarnation: its pid, the boot clock and randomness, so a restarted agent
/// never speaks for its predecessor's grants.
pub fn new_incarnation() -> Incarnation {
    let id = format!(
        "p{}-{:x}-{:08x}",
        std::process::id(),
        crate::clock::boot_ns(),
        rand::rng().random::<u32>()
    );
    // Only digits, letters and '-': always a valid incarnation.
    Incarnation::parse(&id).unwrap_or_else(|_| unreachable!("{id} is a valid incarnation"))
}

impl<C: DeadlineClock + Clone> HostAgent<C> {
    /// Starts polling at once on `clock`, as `incarnation`. `healthy` is the host's own
    /// verdict, asked before every check (an unhealthy host is not renewed and loses its
    /// grants).
    pub fn start_with(
        source: impl HostSource,
        config: AgentConfig,
        healthy: impl Fn() -> bool + Send + Sync + 'static,
        grant_hook: Option<GrantHook>,
        clock: C,
        incarnation: Incarnation,
    ) -> Self {
        let poll = HostPoll::new(&config, incarnation.clone(), clock.now_ns());
        let (events, _) = broadcast::channel(EVENTS);
        let shared = Arc::new(Shared {
            grants: Grants::new(config.groups.iter().cloned()),
            control: Mutex::new(Control::default()),
            wake: Notify::new(),
            published: Mutex::new(Published {
                views: poll.views().map(|(g, v)| (g.clone(), v.clone())).collect(),
                status: HostStatus {
                    host: config.host.clone(),
                    incarnation,
                    host_epoch: None,
                    deadline_ns: None,
                    reachable: false,
                    last_error: Some("no answer yet".into()),
                    silenced: false,
                    standby: false,
                    primaries: 0,
                    polls: 0,
                    checks: 0,
                    check_failures: 0,
                },
            }),
            events,
        });
        let poller = Poller {
            shared: shared.clone(),
            source,
            clock: clock.clone(),
            healthy: Box::new(healthy),
            config,
            poll,
            failures: 0,
            grant_hook,
        };
        let task = tokio::spawn(poller.run());
        Self {
            shared,
            clock,
            task,
        }
    }

    /// A permit for a write to `group` now, or none (also none for a group this host does
    /// not serve). No I/O, no lock, no allocation: a hash lookup, a few atomic loads and one
    /// read of the deadline clock.
    #[inline]
    pub fn write_permit(&self, group: &GroupId) -> Option<WritePermit> {
        self.shared.grants.permit(group, || self.clock.now_ns())
    }

    /// The host's role in `group` now (`None` for a group it does not serve). A primary whose
    /// window passed without a fresh answer is `Unknown`, even before the poller noticed.
    pub fn state(&self, group: &GroupId) -> Option<GroupRole> {
        let published = lock(&self.shared.published);
        let view = published.views.get(group)?;
        if let Some(permit) = self.write_permit(group) {
            return Some(GroupRole::Primary {
                epoch: permit.epoch,
                deadline_ns: permit.deadline_ns,
            });
        }
        Some(role_of(view, &published.status, false))
    }

    pub fn status(&self) -> HostStatus {
        lock(&self.shared.published).status.clone()
    }

    /// The groups this host serves.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = lock(&self.shared.published).views.keys().cloned().collect();
        groups.sort();
        groups
    }

    /// Role changes of every group, as they happen. A subscriber that falls more than 8,192
    /// events behind gets `Lagged` and should re-read [`HostAgent::state`].
    pub fn subscribe(&self) -> broadcast::Receiver<GroupEvent> {
        self.shared.events.subscribe()
    }

    /// Planned step-down from one group: its gate closes before this returns its first
    /// await (no permit is handed out from then on), then the grant is released so the next
    /// host takes it at its very next check. An answer to a check sent before this call never
    /// reopens the gate.
    pub async fn step_down(&self, group: &GroupId) -> Result<(), SourceError> {
        self.request_step_down(Some(group.clone())).await
    }

    /// Planned step-down of the whole host (maintenance): every gate closes, every grant is
    /// released, and the host reports itself unhealthy so it acquires nothing, until
    /// [`HostAgent::resume`].
    pub async fn step_down_host(&self) -> Result<(), SourceError> {
        self.request_step_down(None).await
    }

    /// Ends a whole-host step-down: the host is a candidate again from its next check.
    pub fn resume(&self) {
        lock(&self.shared.control).resume = true;
        self.shared.wake.notify_one();
    }

    async fn request_step_down(&self, group: Option<GroupId>) -> Result<(), SourceError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut control = lock(&self.shared.control);
            match &group {
                Some(g) => self.shared.grants.close(g),
                None => self.shared.grants.close_all(),
            }
            control.step_downs.push(StepDown {
                group,
                at_ns: self.clock.now_ns(),
                reply,
            });
        }
        self.shared.wake.notify_one();
        answer
            .await
            .map_err(|_| SourceError("the agent's poller has stopped".into()))?
    }
}

impl<C: DeadlineClock + Clone> Drop for HostAgent<C> {
    fn drop(&mut self) {
        self.shared.grants.close_all();
        self.task.abort();
    }
}

fn role_of(view: &GroupView, status: &HostStatus, open: bool) -> GroupRole {
    if open {
        return GroupRole::Primary {
            epoch: view.epoch,
            deadline_ns: status.deadline_ns.unwrap_or(0),
        };
    }
    if let Some(error) = &view.error {
        return GroupRole::Unknown {
            reason: error.clone(),
        };
    }
    if !status.reachable {
        return GroupRole::Unknown {
            reason: status
                .last_error
                .clone()
                .unwrap_or_else(|| "no fresh answer".into()),
        };
    }
    GroupRole::Secondary {
        holder: view.holder.clone(),
        epoch: view.epoch,
    }
}

struct Poller<S, C> {
    shared: Arc<Shared>,
    source: S,
    clock: C,
    healthy: Box<dyn Fn() -> bool + Send + Sync>,
    config: AgentConfig,
    poll: HostPoll,
    failures: u32,
    grant_hook: Option<GrantHook>,
}

impl<S: HostSource, C: DeadlineClock> Poller<S, C> {
    async fn run(mut self) {
        loop {
            let wait = self.poll_once().await;
            self.handle_step_downs().await;
            if self.poll.urgent() {
                // A dead holder's groups to read: take them over now, not a poll later.
                continue;
            }
            let wait = self.jittered(wait);
            let now = self.clock.now_ns();
            // Wake early when a look is due or the window ends (to tell subscribers on time).
            let window_end = self
                .shared
                .grants
                .window()
                .map(|(_, d)| d)
                .filter(|d| *d > now);
            let early = [self.poll.next_look_ns(), window_end]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min()
                .map(|t| Duration::from_nanos(t - now));
            let sleep = early.map_or(wait, |e| e.min(wait));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.shared.wake.notified() => {}
            }
            self.publish_expired_window();
        }
    }

    fn jittered(&self, wait: Duration) -> Duration {
        let j = self.config.jitter;
        if j <= 0.0 {
            return wait;
        }
        wait.mul_f64(rand::rng().random_range(1.0 - j..=1.0 + j))
    }

    /// One poll (usually one check); returns how long to wait before the next.
    async fn poll_once(&mut self) -> Duration {
        let healthy = (self.healthy)();
        let bodies = self.poll.next_checks(self.clock.now_ns(), healthy);
        lock(&self.shared.published).status.polls += 1;
        let mut wait = self.config.poll_interval();
        for body in bodies {
            lock(&self.shared.published).status.checks += 1;
            metrics::check_sent();
            let t_sent = self.clock.now_ns();
            match timeout(
                self.config.request_timeout,
                self.source.check(self.poll.host(), &body),
            )
            .await
            {
                Ok(Ok(answer)) => {
                    let t_received = self.clock.now_ns();
                    metrics::check_answered(t_received.saturating_sub(t_sent));
                    self.failures = 0;
                    if answer.poll_after_ms > 0 {
                        wait = wait.min(Duration::from_millis(answer.poll_after_ms));
                    }
                    self.on_answer(&body, &answer, t_sent, t_received).await;
                }
                Ok(Err(e)) => return self.on_failure(e.0),
                Err(_) => {
                    self.poll.timed_out();
                    return self.on_failure(format!(
                        "lease-check did not answer within {:?}",
                        self.config.request_timeout
                    ));
                }
            }
        }
        wait
    }

    async fn on_answer(
        &mut self,
        body: &HostCheckBody,
        answer: &tenure::lease::service::HostAnswer,
        t_sent: u64,
        t_received: u64,
    ) {
        let shared = self.shared.clone();
        let (effects, replies) = {
            let mut control = lock(&shared.control);
            let (mut releases, replies) = self.take_step_downs(&mut control);
            let mut effects = self.poll.apply(body, answer, t_sent, t_received);
            self.enact(&effects);
            drop(control);
            effects
                .changed
                .extend(releases.iter().map(|(g, _)| g.clone()));
            effects.changed.sort();
            effects.changed.dedup();
            releases.extend(effects.release.iter().cloned());
            effects.release = releases;
            (effects, replies)
        };
        let result = self.release(&effects.release).await;
        for reply in replies {
            let _ = reply.send(result.clone());
        }
        self.publish(&effects, true, None);
    }

    /// Moves waiting step-downs into the poll state (their gates are already closed) and
    /// returns what to release and whom to tell.
    fn take_step_downs(
        &mut self,
        control: &mut Control,
    ) -> (Vec<(GroupId, Epoch)>, Vec<StepDownReply>) {
        if std::mem::take(&mut control.resume) {
            self.poll.resume();
        }
        let mut releases = Vec::new();
        let mut replies = Vec::new();
        for step in control.step_downs.drain(..) {
            match &step.group {
                Some(g) => releases.extend(self.poll.step_down(g, step.at_ns)),
                None => {
                    self.shared.grants.close_all();
                    releases.extend(self.poll.step_down_host(step.at_ns));
                }
            }
            replies.push(step.reply);
        }
        // The gates closed when the step-down was asked for; this is on record before the
        // release leaves (see `GrantNotice`).
        self.notify_closed(releases.iter().map(|(g, _)| g));
        (releases, replies)
    }

    /// Step-downs asked for between checks: released at once, not at the next poll.
    async fn handle_step_downs(&mut self) {
        let shared = self.shared.clone();
        let (releases, replies) = {
            let mut control = lock(&shared.control);
            self.take_step_downs(&mut control)
        };
        if replies.is_empty() && releases.is_empty() {
            return;
        }
        let result = self.release(&releases).await;
        for reply in replies {
            let _ = reply.send(result.clone());
        }
        let changed = releases.iter().map(|(g, _)| g.clone()).collect();
        let effects = Effects {
            host_epoch: self.poll.host_epoch().unwrap_or_default(),
            deadline_ns: self.shared.grants.window().map(|(_, d)| d),
            changed,
            ..Effects::default()
        };
        let reachable = lock(&self.shared.published).status.reachable;
        self.publish(&effects, reachable, None);
    }

    /// The answer's effects on the gates, in the order the grants table's safety argument
    /// needs: the hook first (the audit log never understates), then the host epoch, the
    /// closes, the opens, and the window's deadline last.
    fn enact(&self, effects: &Effects) {
        if let Some(hook) = &self.grant_hook {
            for (group, epoch) in &effects.open {
                hook(&GrantNotice::Open {
                    group,
                    epoch: *epoch,
                    host_epoch: effects.host_epoch,
                });
            }
            if let Some(deadline_ns) = effects.deadline_ns {
                hook(&GrantNotice::Window {
                    host_epoch: effects.host_epoch,
                    deadline_ns,
                });
            }
        }
        let grants = &self.shared.grants;
        grants.set_host_epoch(effects.host_epoch);
        for group in &effects.close {
            grants.close(group);
        }
        self.notify_closed(effects.close.iter());
        match effects.deadline_ns {
            Some(deadline) => {
                for (group, epoch) in &effects.open {
                    grants.open(group, *epoch);
                }
                grants.extend(deadline);
            }
            None => grants.close_all(),
        }
    }

    /// Tells the grant hook of gates already closed (their releases are sent after this).
    fn notify_closed<'g>(&self, groups: impl Iterator<Item = &'g GroupId>) {
        if let Some(hook) = &self.grant_hook {
            for group in groups {
                hook(&GrantNotice::Closed { group });
            }
        }
    }

    async fn release(&self, groups: &[(GroupId, Epoch)]) -> Result<(), SourceError> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        for chunk in groups.chunks(tenure::lease::service::MAX_GROUPS_PER_CALL) {
            match timeout(
                self.config.request_timeout,
                self.source.release(self.poll.host(), chunk),
            )
            .await
            {
                Ok(Ok(entries)) => {
                    info!(groups = chunk.len(), "released");
                    for entry in entries {
                        if let tenure::lease::service::GroupEntry::Error { group_id, error } = entry
                        {
                            warn!(group = %group_id, code = %error.code, message = %error.message, "release refused");
                        }
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "release failed; it is sent again after the next check");
                    result = Err(e);
                }
                Err(_) => {
                    warn!("release timed out; it is sent again after the next check");
                    result = Err(SourceError("release timed out".into()));
                }
            }
        }
        result
    }

    /// No fresh answer. Open gates keep the window they have (it closes by itself); every
    /// other group is `Unknown` at once. Retries back off, but while a window is open the
    /// agent retries at least every poll interval.
    fn on_failure(&mut self, reason: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        lock(&self.shared.published).status.check_failures += 1;
        metrics::check_failed();
        warn!(failures = self.failures, %reason, "lease check failed");
        let effects = Effects {
            host_epoch: self.poll.host_epoch().unwrap_or_default(),
            deadline_ns: self.shared.grants.window().map(|(_, d)| d),
            changed: self
                .poll
                .views()
                .filter(|(_, v)| !v.open)
                .map(|(g, _)| g.clone())
                .collect(),
            ..Effects::default()
        };
        self.publish(&effects, false, Some(reason));
        let backoff = self
            .config
            .poll_interval()
            .saturating_mul(1 << self.failures.min(6))
            .min(self.config.max_backoff);
        if self.shared.grants.window().is_some() {
            backoff.min(self.config.poll_interval())
        } else {
            backoff
        }
    }

    /// When the window ended without a fresh answer, every open gate closes and its group is
    /// `Unknown` until an answer reopens it (through the grant hook, as any opening).
    fn publish_expired_window(&mut self) {
        let now = self.clock.now_ns();
        let Some((_, deadline)) = self.shared.grants.window() else {
            return;
        };
        if now < deadline {
            return;
        }
        let shared = self.shared.clone();
        let closed = {
            // Under the control lock, as every change of the gates the poller makes.
            let _control = lock(&shared.control);
            shared.grants.close_all();
            self.poll.window_expired()
        };
        let mut published = lock(&shared.published);
        published.status.deadline_ns = None;
        for group in closed {
            if let Some(view) = self.poll.view(&group) {
                published.views.insert(group.clone(), view.clone());
            }
            let _ = shared.events.send(GroupEvent {
                group,
                role: GroupRole::Unknown {
                    reason: "the window passed without a fresh answer".into(),
                },
            });
        }
        published.status.primaries = 0;
    }

    /// Publishes the views of `effects.changed` and the host status, and tells subscribers.
    fn publish(&self, effects: &Effects, reachable: bool, error: Option<String>) {
        let mut published = lock(&self.shared.published);
        let was_reachable = published.status.reachable;
        published.status.reachable = reachable;
        published.status.last_error = error;
        published.status.host_epoch = self.poll.host_epoch();
        published.status.deadline_ns = self.shared.grants.window().map(|(_, d)| d);
        published.status.silenced = self.poll.silenced();
        published.status.standby = self.poll.standby();
        let mut changed: Vec<&GroupId> = effects.changed.iter().collect();
        if reachable != was_reachable {
            // Every group's role may read differently now.
            changed = self.poll.views().map(|(g, _)| g).collect();
        }
        for group in changed {
            let Some(view) = self.poll.view(group) else {
                continue;
            };
            published.views.insert(group.clone(), view.clone());
            let open = view.open && self.shared.grants.is_open(group);
            let role = role_of(view, &published.status, open);
            let _ = self.shared.events.send(GroupEvent {
                group: group.clone(),
                role,
            });
        }
        published.status.primaries = self.poll.views().filter(|(_, v)| v.open).count();
        let roles: Vec<GroupRole> = self
            .poll
            .views()
            .map(|(group, view)| {
                let open = view.open && self.shared.grants.is_open(group);
                role_of(view, &published.status, open)
            })
            .collect();
        let remaining_ns = published
            .status
            .deadline_ns
            .map(|d| d.saturating_sub(self.clock.now_ns()))
            .unwrap_or(0);
        metrics::host_state(
            published.status.host_epoch.map(|e| e.0),
            remaining_ns,
            reachable,
            roles.iter(),
        );
    }
}
