//! The gate itself: a poller task that owns all I/O, and a lock-free grant the host's write
//! path reads.

use crate::source::SourceError;
use crate::v1_source::LeaseSource;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tenure::ids::HostId;
use tenure::lease::{CheckAnswer, Epoch, LeaseConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Duration, Instant};
use tracing::{info, warn};

/// Allowance for this host's monotonic clock running fast relative to the function's (100 ppm).
const DRIFT_ALLOWANCE: f64 = 1e-4;

/// Permission to write, with the epoch every write must carry (the storage refuses an epoch
/// lower than one it has seen). Valid until `deadline`; take a fresh one for each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePermit {
    pub epoch: Epoch,
    pub deadline: Instant,
}

/// Called with every grant *before* it opens the gate (so before any write can use it). An
/// audit log written from here can only overstate when the host could write, never understate
/// it, which is what a checker of "never two writable hosts" needs. Keep it short: it runs on
/// the poller task.
pub type GrantHook = Arc<dyn Fn(&WritePermit) + Send + Sync>;

/// What the host is. `Unknown` means no fresh answer (lease-check unreachable or erroring):
/// read-only, still polling, and never to be read as "lost".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    Primary {
        epoch: Epoch,
        deadline: Instant,
    },
    Secondary {
        holder: Option<HostId>,
        epoch: Epoch,
    },
    Unknown {
        since: Instant,
        reason: String,
    },
}

impl GateState {
    fn same_role(&self, other: &GateState) -> bool {
        match (self, other) {
            (GateState::Primary { epoch: a, .. }, GateState::Primary { epoch: b, .. }) => a == b,
            (
                GateState::Secondary {
                    holder: a,
                    epoch: x,
                },
                GateState::Secondary {
                    holder: b,
                    epoch: y,
                },
            ) => a == b && x == y,
            (GateState::Unknown { .. }, GateState::Unknown { .. }) => true,
            _ => false,
        }
    }
}

/// How the poller paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// Used when an answer gives no `poll_after_ms`, and as the base of the error backoff.
    pub poll_interval: Duration,
    /// A heartbeat (a write) at least this often; other checks are reads.
    pub heartbeat_every: Duration,
    pub request_timeout: Duration,
    pub max_backoff: Duration,
    /// Each wait is scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// After a step-down the host reports itself unhealthy this long, so another host takes
    /// over instead of this one re-acquiring.
    pub step_down_hold_off: Duration,
}

impl GateConfig {
    /// The pacing the protocol asks for: poll every `poll_interval_ms`, heartbeat every
    /// `heartbeat_timeout_ms / 3`.
    pub fn from_lease(cfg: &LeaseConfig) -> Self {
        Self {
            poll_interval: Duration::from_millis(cfg.poll_interval_ms),
            heartbeat_every: Duration::from_millis(cfg.heartbeat_timeout_ms / 3),
            request_timeout: Duration::from_millis(cfg.poll_interval_ms.max(1_000)),
            max_backoff: Duration::from_secs(5),
            jitter: 0.1,
            step_down_hold_off: Duration::from_millis(cfg.heartbeat_timeout_ms * 2),
        }
    }
}

/// The current grant as two atomics, so the write path takes no lock and no reference count.
///
/// Writers store the epoch, then the deadline (both Release); `write_permit` loads the deadline,
/// then the epoch (both Acquire). A reader that sees a deadline therefore sees that grant's
/// epoch or a newer one. A newer epoch is only ever issued after this host's previous lease
/// lapsed, i.e. after every deadline of the older grant has passed, so a mixed read (older
/// deadline, newer epoch) never yields a permit; and the opposite mix cannot be observed.
struct Grant {
    /// Time zero for `deadline_ns`.
    base: Instant,
    epoch: AtomicU64,
    /// Nanoseconds after `base`; 0 is a closed gate.
    deadline_ns: AtomicU64,
}

impl Grant {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            epoch: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
        }
    }

    fn open(&self, permit: WritePermit) {
        let ns = permit
            .deadline
            .saturating_duration_since(self.base)
            .as_nanos();
        self.epoch.store(permit.epoch.0, Ordering::Release);
        self.deadline_ns.store(
            u64::try_from(ns).unwrap_or(u64::MAX).max(1),
            Ordering::Release,
        );
    }

    fn close(&self) {
        self.deadline_ns.store(0, Ordering::Release);
    }

    #[inline]
    fn permit(&self) -> Option<WritePermit> {
        let deadline_ns = self.deadline_ns.load(Ordering::Acquire);
        if deadline_ns == 0 {
            return None;
        }
        let deadline = self.base + Duration::from_nanos(deadline_ns);
        if Instant::now() >= deadline {
            return None;
        }
        Some(WritePermit {
            epoch: Epoch(self.epoch.load(Ordering::Acquire)),
            deadline,
        })
    }
}

struct Shared {
    /// Written only by the poller (open and close) and by step_down and drop (close).
    grant: Grant,
    state: watch::Sender<GateState>,
    /// Set by `step_down` before it closes the gate, so an answer already in flight cannot
    /// reopen it; cleared once an answer shows this host no longer writable.
    stepping_down: AtomicBool,
}

enum Command {
    StepDown(oneshot::Sender<Result<(), SourceError>>),
}

/// The write gate of one host in one replica group.
pub struct LeaseGate {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl LeaseGate {
    /// Starts polling `source` at once. `healthy` is the host's own health verdict, asked
    /// before every check (an unhealthy primary stops being renewed and loses the lease).
    pub fn start(
        source: impl LeaseSource,
        healthy: impl Fn() -> bool + Send + Sync + 'static,
        config: GateConfig,
    ) -> Self {
        Self::start_with_grant_hook(source, healthy, config, None)
    }

    /// [`LeaseGate::start`], calling `grant_hook` with every grant before the gate opens on it.
    pub fn start_with_grant_hook(
        source: impl LeaseSource,
        healthy: impl Fn() -> bool + Send + Sync + 'static,
        config: GateConfig,
        grant_hook: Option<GrantHook>,
    ) -> Self {
        let (state, _) = watch::channel(GateState::Unknown {
            since: Instant::now(),
            reason: "no answer yet".into(),
        });
        let shared = Arc::new(Shared {
            grant: Grant::new(),
            state,
            stepping_down: AtomicBool::new(false),
        });
        let (commands, inbox) = mpsc::channel(4);
        let poller = Poller {
            shared: shared.clone(),
            source,
            healthy: Box::new(healthy),
            config,
            inbox,
            last_heartbeat: None,
            failures: 0,
            hold_off_until: None,
            grant_hook,
        };
        let task = tokio::spawn(poller.run());
        Self {
            shared,
            commands,
            task,
        }
    }

    /// A permit if the host may write now. No I/O and no lock: one atomic load and a clock read.
    #[inline]
    pub fn write_permit(&self) -> Option<WritePermit> {
        self.shared.grant.permit()
    }

    /// The host's state now (a primary whose deadline passed without a fresh answer is
    /// `Unknown`, even before the poller has noticed).
    pub fn state(&self) -> GateState {
        let state = self.shared.state.borrow().clone();
        match state {
            GateState::Primary { epoch, .. } => match self.write_permit() {
                Some(permit) => GateState::Primary {
                    epoch,
                    deadline: permit.deadline,
                },
                None => GateState::Unknown {
                    since: Instant::now(),
                    reason: "deadline passed without a fresh answer".into(),
                },
            },
            other => other,
        }
    }

    /// Changes of state (gained, lost, unknown), as a `watch` channel.
    pub fn subscribe(&self) -> watch::Receiver<GateState> {
        self.shared.state.subscribe()
    }

    /// Planned step-down: closes the gate first (no permit is handed out from here on), then
    /// releases the lease so the next host can take it at once.
    pub async fn step_down(&self) -> Result<(), SourceError> {
        self.shared.stepping_down.store(true, Ordering::SeqCst);
        self.shared.grant.close();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::StepDown(reply))
            .await
            .map_err(|_| SourceError("the gate's poller has stopped".into()))?;
        answer
            .await
            .map_err(|_| SourceError("the gate's poller has stopped".into()))?
    }
}

impl Drop for LeaseGate {
    fn drop(&mut self) {
        self.shared.grant.close();
        self.task.abort();
    }
}

struct Poller<S> {
    shared: Arc<Shared>,
    source: S,
    healthy: Box<dyn Fn() -> bool + Send + Sync>,
    config: GateConfig,
    inbox: mpsc::Receiver<Command>,
    last_heartbeat: Option<Instant>,
    failures: u32,
    hold_off_until: Option<Instant>,
    grant_hook: Option<GrantHook>,
}

impl<S: LeaseSource> Poller<S> {
    async fn run(mut self) {
        loop {
            let wait = self.poll_once().await;
            let wake = Instant::now() + self.jittered(wait);
            // Wake early at the grant's deadline so subscribers hear of the loss on time.
            let deadline = self.shared.grant.permit().map(|p| p.deadline);
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = sleep_until(deadline.unwrap_or(wake)), if deadline.is_some_and(|d| d < wake) => {
                    self.publish(GateState::Unknown {
                        since: Instant::now(),
                        reason: "deadline passed without a fresh answer".into(),
                    });
                    sleep_until(wake).await;
                }
                Some(command) = self.inbox.recv() => {
                    self.handle(command).await;
                    sleep_until(wake).await;
                }
            }
        }
    }

    fn publish(&self, state: GateState) {
        self.shared.state.send_if_modified(|current| {
            if current.same_role(&state) {
                return false;
            }
            info!(from = ?current, to = ?state, "lease gate changed");
            *current = state;
            true
        });
    }

    fn jittered(&self, wait: Duration) -> Duration {
        let j = self.config.jitter.clamp(0.0, 0.9);
        if j == 0.0 {
            return wait;
        }
        wait.mul_f64(rand::rng().random_range(1.0 - j..=1.0 + j))
    }

    /// One check; returns how long to wait before the next.
    async fn poll_once(&mut self) -> Duration {
        let t_sent = Instant::now();
        let heartbeat = self
            .last_heartbeat
            .is_none_or(|t| t_sent.duration_since(t) >= self.config.heartbeat_every);
        let held_off = self.hold_off_until.is_some_and(|t| t_sent < t);
        let healthy = (self.healthy)() && !held_off;
        match timeout(
            self.config.request_timeout,
            self.source.check(healthy, heartbeat),
        )
        .await
        {
            Ok(Ok(answer)) => {
                self.failures = 0;
                if heartbeat {
                    self.last_heartbeat = Some(t_sent);
                }
                let wait = match answer.poll_after_ms {
                    0 => self.config.poll_interval,
                    ms => Duration::from_millis(ms),
                };
                self.apply(answer, t_sent).await;
                wait
            }
            Ok(Err(e)) => self.on_failure(e.0),
            Err(_) => self.on_failure(format!(
                "lease-check did not answer within {:?}",
                self.config.request_timeout
            )),
        }
    }

    async fn apply(&mut self, answer: CheckAnswer, t_sent: Instant) {
        let stepping_down = self.shared.stepping_down.load(Ordering::SeqCst);
        if answer.writable && (answer.draining || stepping_down) {
            // An operator (draining) or the host (step_down) asked to hand over: the gate
            // stays closed and the lease is released.
            self.shared.grant.close();
            self.release(answer.epoch).await.ok();
            return;
        }
        if !answer.writable {
            self.shared.stepping_down.store(false, Ordering::SeqCst);
        }
        if answer.writable {
            let valid = Duration::from_millis(answer.valid_for_ms).mul_f64(1.0 - DRIFT_ALLOWANCE);
            let permit = WritePermit {
                epoch: answer.epoch,
                deadline: t_sent + valid,
            };
            if let Some(hook) = &self.grant_hook {
                hook(&permit);
            }
            self.shared.grant.open(permit);
            if self.shared.stepping_down.load(Ordering::SeqCst) {
                // step_down ran while this answer was in flight: it wins.
                self.shared.grant.close();
                return;
            }
            self.publish(GateState::Primary {
                epoch: permit.epoch,
                deadline: permit.deadline,
            });
        } else {
            self.shared.grant.close();
            self.publish(GateState::Secondary {
                holder: answer.holder,
                epoch: answer.epoch,
            });
        }
    }

    /// No fresh answer. A primary keeps its grant until the deadline it already has (the gate
    /// closes by itself then); anyone else is `Unknown` at once. Retries back off, but a
    /// primary retries at least every poll interval while its grant lasts.
    fn on_failure(&mut self, reason: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        warn!(failures = self.failures, %reason, "lease check failed");
        let live_grant = self.shared.grant.permit().is_some();
        if !live_grant {
            self.shared.grant.close();
            self.publish(GateState::Unknown {
                since: Instant::now(),
                reason,
            });
        }
        let backoff = self
            .config
            .poll_interval
            .saturating_mul(1 << self.failures.min(6))
            .min(self.config.max_backoff);
        if live_grant {
            backoff.min(self.config.poll_interval)
        } else {
            backoff
        }
    }

    async fn release(&mut self, epoch: Epoch) -> Result<(), SourceError> {
        self.hold_off_until = Some(Instant::now() + self.config.step_down_hold_off);
        let result = self.source.release(epoch).await;
        match &result {
            Ok(()) => info!(epoch = epoch.0, "lease released"),
            Err(e) => warn!(epoch = epoch.0, error = %e, "release failed; the lease will lapse"),
        }
        self.publish(GateState::Secondary {
            holder: None,
            epoch,
        });
        result
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::StepDown(reply) => {
                let epoch = self.shared.state.borrow().clone();
                let result = match epoch {
                    GateState::Primary { epoch, .. } => self.release(epoch).await,
                    _ => Ok(()),
                };
                let _ = reply.send(result);
            }
        }
    }
}
