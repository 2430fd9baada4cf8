//! The supervisor's decisions as plain functions of state and time: no threads, no
//! processes, no clock of their own, so each rule is a row of a table test. The monitor
//! (`monitor.rs`) carries them out.

use std::time::Duration;

use super::{ExitReason, RestartPolicy};

/// What happens to a cell whose instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It ended on purpose (goodbye, exit code 0): not relaunched.
    Exited,
    /// Relaunch it after this delay.
    Relaunch { after: Duration },
    /// Crashed too often, or it cannot be started at all: Failed.
    GiveUp,
}

/// The restart count of one supervised cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RestartState {
    /// Relaunches counted in the current window.
    pub(crate) restarts: u32,
}

impl RestartState {
    /// An instance ended for `reason`. `uptime` is how long it ran when that counts for
    /// the reset window (a process that died); `None` for an end that says nothing about
    /// how stable the cell is (a failed spawn, a ready timeout, unresponsiveness).
    ///
    /// The rules: goodbye and exit code 0 are ends, not crashes; a cell that ran at least
    /// `reset_after` starts a new window (its count goes back to 0); a failed spawn, or a
    /// crash once `max_restarts` relaunches were counted, gives up; any other crash is
    /// relaunched after `initial_backoff × 2^restarts`, at most `max_backoff`.
    pub(crate) fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        reason: &ExitReason,
        uptime: Option<Duration>,
    ) -> Decision {
        if matches!(reason, ExitReason::Goodbye | ExitReason::Code(0)) {
            return Decision::Exited;
        }
        if uptime.is_some_and(|up| up >= policy.reset_after) {
            self.restarts = 0;
        }
        if matches!(reason, ExitReason::SpawnFailed(_)) || self.restarts >= policy.max_restarts {
            return Decision::GiveUp;
        }
        let after = backoff(policy, self.restarts);
        self.restarts += 1;
        Decision::Relaunch { after }
    }

    /// An operation (start, restart, update) starts a fresh window.
    pub(crate) fn reset(&mut self) {
        self.restarts = 0;
    }
}

/// The delay before relaunch number `restarts + 1`: doubled per relaunch, capped.
pub(crate) fn backoff(policy: &RestartPolicy, restarts: u32) -> Duration {
    // 2^20 times any sensible initial backoff is past any sensible cap; the shift stays
    // defined for any count.
    policy.initial_backoff.saturating_mul(1 << restarts.min(20)).min(policy.max_backoff)
}

/// What became of the heartbeat that was in flight when the next one is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeartbeatOutcome {
    /// None was in flight: this is the first.
    NoneSent,
    /// The last one could not even be sent (a ring the cell does not drain).
    SendFailed,
    /// Still unanswered.
    Pending,
    /// Answered with OK or any error a serving thread returns (UNIMPLEMENTED from a cell
    /// that does not know the method is an answer too).
    Answered,
    /// Ended without an answer: its deadline passed, or it was cancelled.
    TimedOut,
}

/// The heartbeat verdict on a ready instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send the next heartbeat.
    Alive,
    /// Too many unanswered in a row: kill it and relaunch it as unresponsive.
    Unresponsive,
}

/// Unanswered heartbeats in a row of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeartbeatState {
    pub(crate) misses: u32,
}

impl HeartbeatState {
    /// Judges the heartbeat that was in flight; more than `allowed_misses` misses in a
    /// row is unresponsive.
    pub(crate) fn judge(&mut self, outcome: HeartbeatOutcome, allowed_misses: u32) -> Verdict {
        self.misses = match outcome {
            HeartbeatOutcome::NoneSent | HeartbeatOutcome::Answered => 0,
            HeartbeatOutcome::SendFailed | HeartbeatOutcome::Pending | HeartbeatOutcome::TimedOut => self.misses + 1,
        };
        if self.misses > allowed_misses {
            Verdict::Unresponsive
        } else {
            Verdict::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RestartPolicy {
        RestartPolicy { max_restarts: 4, initial_backoff: ms(50), max_backoff: ms(300), reset_after: ms(10_000) }
    }

    #[test]
    fn crashes_double_the_backoff_up_to_the_cap_then_give_up() {
        let crash = ExitReason::Signal(9);
        let mut state = RestartState::default();
        // (uptime of the instance that crashed, decision, count after)
        let table = [
            (ms(10), Decision::Relaunch { after: ms(50) }, 1),
            (ms(10), Decision::Relaunch { after: ms(100) }, 2),
            (ms(10), Decision::Relaunch { after: ms(200) }, 3),
            (ms(10), Decision::Relaunch { after: ms(300) }, 4), // capped
            (ms(10), Decision::GiveUp, 4),
        ];
        for (i, (uptime, decision, count)) in table.into_iter().enumerate() {
            assert_eq!(state.on_exit(&policy(), &crash, Some(uptime)), decision, "row {i}");
            assert_eq!(state.restarts, count, "row {i}");
        }
    }

    #[test]
    fn a_long_run_resets_the_window_and_ends_on_purpose_are_not_crashes() {
        let table: [(u32, ExitReason, Option<Duration>, Decision, u32); 9] = [
            // A run of reset_after or more starts a new window.
            (3, ExitReason::Code(1), Some(ms(10_000)), Decision::Relaunch { after: ms(50) }, 1),
            (3, ExitReason::Code(1), Some(ms(9_999)), Decision::Relaunch { after: ms(300) }, 4),
            (4, ExitReason::Code(1), Some(ms(20_000)), Decision::Relaunch { after: ms(50) }, 1),
            // Goodbye and exit code 0 are ends: the count stays, nothing is relaunched.
            (2, ExitReason::Goodbye, Some(ms(1)), Decision::Exited, 2),
            (2, ExitReason::Code(0), Some(ms(20_000)), Decision::Exited, 2),
            // A failed spawn gives up at once, whatever the count.
            (0, ExitReason::SpawnFailed("no such file".into()), None, Decision::GiveUp, 0),
            // Ends that say nothing about stability do not reset the window.
            (4, ExitReason::ReadyTimeout, None, Decision::GiveUp, 4),
            (1, ExitReason::Unresponsive, None, Decision::Relaunch { after: ms(100) }, 2),
            (0, ExitReason::ProtocolError("bad".into()), Some(ms(1)), Decision::Relaunch { after: ms(50) }, 1),
        ];
        for (i, (before, reason, uptime, decision, after)) in table.into_iter().enumerate() {
            let mut state = RestartState { restarts: before };
            assert_eq!(state.on_exit(&policy(), &reason, uptime), decision, "row {i}: {reason:?}");
            assert_eq!(state.restarts, after, "row {i}: {reason:?}");
        }
    }

    #[test]
    fn backoff_is_defined_for_any_count_and_any_policy() {
        let huge = RestartPolicy { initial_backoff: Duration::MAX, max_backoff: Duration::MAX, ..policy() };
        assert_eq!(backoff(&huge, 3), Duration::MAX);
        assert_eq!(backoff(&policy(), u32::MAX), ms(300));
        let zero = RestartPolicy { initial_backoff: Duration::ZERO, ..policy() };
        assert_eq!(backoff(&zero, 7), Duration::ZERO);
    }

    #[test]
    fn heartbeats_left_unanswered_more_than_allowed_in_a_row_are_unresponsive() {
        use HeartbeatOutcome::*;
        // (outcome of the one in flight, misses after, verdict) with 2 misses allowed
        let table = [
            (NoneSent, 0, Verdict::Alive),
            (Pending, 1, Verdict::Alive),
            (TimedOut, 2, Verdict::Alive),
            (Answered, 0, Verdict::Alive), // an answer clears the misses
            (Pending, 1, Verdict::Alive),
            (Pending, 2, Verdict::Alive),
            (Pending, 3, Verdict::Unresponsive),
        ];
        let mut state = HeartbeatState::default();
        for (i, (outcome, misses, verdict)) in table.into_iter().enumerate() {
            assert_eq!(state.judge(outcome, 2), verdict, "row {i}");
            assert_eq!(state.misses, misses, "row {i}");
        }
        // A cell whose ring is never drained cannot even be sent heartbeats: each failed
        // send is a miss, and they add up (they used to be forgotten at the next turn).
        let mut state = HeartbeatState::default();
        let verdicts: Vec<Verdict> = (0..3).map(|_| state.judge(SendFailed, 2)).collect();
        assert_eq!(verdicts, [Verdict::Alive, Verdict::Alive, Verdict::Unresponsive]);
    }
}
