//! LeaseGate against a scripted lease-check, on tokio's paused clock (time moves only when
//! every task waits, so the deadlines below are exact, not timing-dependent).

use async_trait::async_trait;
use replica_agent::{GateConfig, GateState, LeaseGate, LeaseSource, SourceError};
use std::sync::{Arc, Mutex};
use tenure::ids::{GroupId, HostId};
use tenure::lease::{CheckAnswer, Epoch, LeaseConfig, Role};
use tokio::time::{sleep, Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Reply {
    Primary {
        valid_for_ms: u64,
        epoch: u64,
        draining: bool,
    },
    Secondary,
    Fail,
    /// Answer as primary, but only after this delay.
    SlowPrimary {
        delay_ms: u64,
        valid_for_ms: u64,
    },
}

#[derive(Default)]
struct Log {
    checks: Vec<(Instant, bool, bool)>,
    releases: Vec<Epoch>,
}

#[derive(Clone)]
struct Scripted {
    reply: Arc<Mutex<Reply>>,
    log: Arc<Mutex<Log>>,
}

impl Scripted {
    fn new(reply: Reply) -> Self {
        Self {
            reply: Arc::new(Mutex::new(reply)),
            log: Arc::default(),
        }
    }
    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
}

fn answer(writable: bool, valid_for_ms: u64, epoch: u64, draining: bool) -> CheckAnswer {
    CheckAnswer {
        group_id: GroupId::parse("g").unwrap(),
        host_id: HostId::parse("h").unwrap(),
        role: if writable {
            Role::Primary
        } else {
            Role::Secondary
        },
        writable,
        epoch: Epoch(epoch),
        holder: Some(HostId::parse(if writable { "h" } else { "other" }).unwrap()),
        valid_for_ms,
        poll_after_ms: 500,
        draining,
        holder_host_epoch: None,
    }
}

#[async_trait]
impl LeaseSource for Scripted {
    async fn check(&self, healthy: bool, heartbeat: bool) -> Result<CheckAnswer, SourceError> {
        self.log
            .lock()
            .unwrap()
            .checks
            .push((Instant::now(), healthy, heartbeat));
        let reply = *self.reply.lock().unwrap();
        match reply {
            Reply::Primary {
                valid_for_ms,
                epoch,
                draining,
            } => Ok(answer(true, valid_for_ms, epoch, draining)),
            Reply::Secondary => Ok(answer(false, 0, 3, false)),
            Reply::Fail => Err(SourceError("503 store_unavailable".into())),
            Reply::SlowPrimary {
                delay_ms,
                valid_for_ms,
            } => {
                sleep(Duration::from_millis(delay_ms)).await;
                Ok(answer(true, valid_for_ms, 1, false))
            }
        }
    }
    async fn release(&self, epoch: Epoch) -> Result<(), SourceError> {
        self.log.lock().unwrap().releases.push(epoch);
        Ok(())
    }
}

fn config() -> GateConfig {
    GateConfig {
        jitter: 0.0,
        ..GateConfig::from_lease(&LeaseConfig::default())
    }
}

#[tokio::test(start_paused = true)]
async fn the_gate_closes_at_the_deadline_even_when_the_server_stops_answering() {
    let source = Scripted::new(Reply::Primary {
        valid_for_ms: 2_000,
        epoch: 4,
        draining: false,
    });
    let started = Instant::now();
    let gate = LeaseGate::start(source.clone(), || true, config());
    sleep(Duration::from_millis(1)).await;
    let permit = gate
        .write_permit()
        .expect("writable after the first answer");
    assert_eq!(permit.epoch, Epoch(4));
    source.set(Reply::Fail);
    // The last good answer's window ends 2000 * (1 - 1e-4) ms after it was sent, and no
    // failure after it extends the window.
    let last_good = source
        .log
        .lock()
        .unwrap()
        .checks
        .iter()
        .map(|c| c.0)
        .next_back()
        .unwrap();
    let deadline = permit.deadline;
    assert!(deadline <= last_good + Duration::from_millis(2_000));
    sleep(Duration::from_millis(3_000)).await;
    assert!(gate.write_permit().is_none(), "closed after the deadline");
    assert!(
        matches!(gate.state(), GateState::Unknown { .. }),
        "{:?}",
        gate.state()
    );
    assert!(
        Instant::now() > started + Duration::from_millis(2_000),
        "paused time moved as slept"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_when_the_check_was_sent_not_answered() {
    let source = Scripted::new(Reply::SlowPrimary {
        delay_ms: 800,
        valid_for_ms: 2_000,
    });
    let sent = Instant::now();
    let gate = LeaseGate::start(source.clone(), || true, config());
    sleep(Duration::from_millis(801)).await;
    source.set(Reply::Fail);
    let permit = gate
        .write_permit()
        .expect("writable once the slow answer arrived");
    assert_eq!(
        permit.deadline,
        sent + Duration::from_millis(2_000).mul_f64(1.0 - 1e-4)
    );
    sleep_until_after(permit.deadline).await;
    assert!(gate.write_permit().is_none());
}

async fn sleep_until_after(t: Instant) {
    tokio::time::sleep_until(t + Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn errors_make_a_secondary_unknown_never_lost() {
    let source = Scripted::new(Reply::Secondary);
    let gate = LeaseGate::start(source.clone(), || true, config());
    sleep(Duration::from_millis(1)).await;
    assert!(matches!(gate.state(), GateState::Secondary { .. }));
    source.set(Reply::Fail);
    sleep(Duration::from_millis(600)).await;
    match gate.state() {
        GateState::Unknown { reason, .. } => {
            assert!(reason.contains("store_unavailable"), "{reason}")
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert!(gate.write_permit().is_none());
    // It keeps polling, backing off, and recovers on the next answer.
    source.set(Reply::Secondary);
    sleep(Duration::from_secs(6)).await;
    assert!(matches!(gate.state(), GateState::Secondary { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_draining_answer_closes_the_gate_and_releases() {
    let source = Scripted::new(Reply::Primary {
        valid_for_ms: 9_000,
        epoch: 7,
        draining: false,
    });
    let gate = LeaseGate::start(source.clone(), || true, config());
    let mut changes = gate.subscribe();
    sleep(Duration::from_millis(1)).await;
    assert!(gate.write_permit().is_some());
    assert!(matches!(
        *changes.borrow_and_update(),
        GateState::Primary {
            epoch: Epoch(7),
            ..
        }
    ));
    source.set(Reply::Primary {
        valid_for_ms: 9_000,
        epoch: 7,
        draining: true,
    });
    sleep(Duration::from_millis(600)).await;
    assert!(
        gate.write_permit().is_none(),
        "a draining primary stops writing"
    );
    assert_eq!(source.log.lock().unwrap().releases, vec![Epoch(7)]);
    assert!(changes.has_changed().unwrap());
    assert!(matches!(*changes.borrow(), GateState::Secondary { .. }));
}

#[tokio::test(start_paused = true)]
async fn step_down_closes_the_gate_then_releases_and_holds_off() {
    let source = Scripted::new(Reply::Primary {
        valid_for_ms: 9_000,
        epoch: 2,
        draining: false,
    });
    let gate = LeaseGate::start(source.clone(), || true, config());
    sleep(Duration::from_millis(1)).await;
    assert!(gate.write_permit().is_some());
    gate.step_down().await.unwrap();
    assert!(gate.write_permit().is_none());
    assert_eq!(source.log.lock().unwrap().releases, vec![Epoch(2)]);
    // This fake keeps answering "writable" (as if the release were lost): such answers do not
    // reopen the gate; the agent releases again instead.
    sleep(Duration::from_millis(1_000)).await;
    assert!(gate.write_permit().is_none());
    assert!(source
        .log
        .lock()
        .unwrap()
        .releases
        .iter()
        .all(|e| *e == Epoch(2)));
    let after = Instant::now();
    sleep(Duration::from_millis(1_000)).await;
    let log = source.log.lock().unwrap();
    assert!(
        log.checks.iter().filter(|c| c.0 > after).all(|c| !c.1),
        "reports unhealthy while holding off"
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_every_third_of_the_heartbeat_timeout() {
    let source = Scripted::new(Reply::Secondary);
    let _gate = LeaseGate::start(source.clone(), || true, config());
    sleep(Duration::from_millis(5_050)).await;
    let log = source.log.lock().unwrap();
    let beats = log.checks.iter().filter(|c| c.2).count();
    let reads = log.checks.len() - beats;
    // Polls every 500 ms over 5 s (11 checks); a heartbeat every 1 s (6 of them).
    assert_eq!((log.checks.len(), beats, reads), (11, 6, 5));
}

#[tokio::test(start_paused = true)]
async fn the_health_hook_is_reported_in_every_check() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = healthy.clone();
    let source = Scripted::new(Reply::Secondary);
    let _gate = LeaseGate::start(
        source.clone(),
        move || flag.load(std::sync::atomic::Ordering::SeqCst),
        config(),
    );
    sleep(Duration::from_millis(600)).await;
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    sleep(Duration::from_millis(1_000)).await;
    let log = source.log.lock().unwrap();
    assert!(log.checks[0].1);
    assert!(!log.checks.last().unwrap().1);
}

#[tokio::test(start_paused = true)]
async fn the_grant_hook_sees_every_grant_before_the_gate_opens_on_it() {
    let source = Scripted::new(Reply::Primary {
        valid_for_ms: 2_000,
        epoch: 7,
        draining: false,
    });
    // The hook records whether the gate was already open on this grant when it ran.
    let seen: Arc<Mutex<Vec<(Epoch, Instant, bool)>>> = Arc::default();
    let gate_slot: Arc<std::sync::OnceLock<Arc<LeaseGate>>> = Arc::default();
    let hook = {
        let (seen, gate_slot) = (seen.clone(), gate_slot.clone());
        Arc::new(move |permit: &replica_agent::V1WritePermit| {
            let open_already = gate_slot
                .get()
                .and_then(|g| g.write_permit())
                .is_some_and(|p| p.deadline == permit.deadline);
            seen.lock()
                .unwrap()
                .push((permit.epoch, permit.deadline, open_already));
        })
    };
    let gate = Arc::new(LeaseGate::start_with_grant_hook(
        source.clone(),
        || true,
        config(),
        Some(hook),
    ));
    let _ = gate_slot.set(gate.clone());
    sleep(Duration::from_millis(1_600)).await;
    let seen = seen.lock().unwrap().clone();
    let checks = source.log.lock().unwrap().checks.len();
    assert_eq!(seen.len(), checks, "one hook call per writable answer");
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.iter().all(|(e, _, open)| *e == Epoch(7) && !open));
    let permit = gate.write_permit().expect("open");
    assert_eq!(permit.deadline, seen.last().unwrap().1);
}
