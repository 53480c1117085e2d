//! The one seam through which fault tests reach production code.
//!
//! A local fault campaign must be able to kill a worker at the worst moment: after the target
//! region applied an operation, before the work item is completed (the crash the exactly-once
//! argument has to survive). The campaign's fault proxy sits between the worker and irc-remote
//! and asks for that crash by adding [`FAULT_HEADER`] to the remote's answer; the worker obeys
//! only when its [`FaultSwitch`] is on (`TENURE_IRC_FAULT_INJECTION=true`, set by the local
//! test stacks alone; off in every deployed stack). Nothing else in production code knows about
//! faults: store and network faults are made outside the process (the fault proxy in
//! `tests/`), never by code paths inside it.

use tracing::error;

/// The answer header a fault-injecting proxy sets.
pub const FAULT_HEADER: &str = "x-tenure-fault";

/// A fault a proxy can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker exits after the remote applied the op, before it completes the item.
    ExitAfterApply,
}

impl Fault {
    /// The header's value; anything unknown is no fault (a proxy cannot make code misbehave
    /// in a way this enum does not name).
    pub fn from_header(value: &str) -> Option<Fault> {
        match value {
            "exit-after-apply" => Some(Fault::ExitAfterApply),
            _ => None,
        }
    }

    pub fn as_header(self) -> &'static str {
        match self {
            Fault::ExitAfterApply => "exit-after-apply",
        }
    }
}

/// Whether this process obeys faults asked for (off unless the environment switches it on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSwitch {
    enabled: bool,
}

impl FaultSwitch {
    pub const OFF: FaultSwitch = FaultSwitch { enabled: false };

    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    pub fn is_on(self) -> bool {
        self.enabled
    }

    /// Called by the worker once the remote answered: exits the process when the answer asked
    /// for [`Fault::ExitAfterApply`] and faults are on.
    pub fn after_remote_apply(self, fault: Option<Fault>, op_id: &str) {
        if self.enabled && fault == Some(Fault::ExitAfterApply) {
            error!(
                op_id,
                "fault injection: worker exits after the remote applied, before completing"
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_faults_are_recognised() {
        assert_eq!(
            Fault::from_header(Fault::ExitAfterApply.as_header()),
            Some(Fault::ExitAfterApply)
        );
        assert_eq!(Fault::from_header("exit"), None);
        assert_eq!(Fault::from_header(""), None);
    }

    #[test]
    fn a_switched_off_process_ignores_the_fault() {
        // Would exit the test process if the switch were ignored.
        FaultSwitch::OFF.after_remote_apply(Some(Fault::ExitAfterApply), "op");
        FaultSwitch::new(true).after_remote_apply(None, "op");
        assert!(!FaultSwitch::default().is_on());
    }
}
