//! The monitor thread: launches, deaths, readiness, heartbeats and relaunches.

use super::policy::{Decision, HeartbeatOutcome, Verdict};
use super::*;

impl Shared {
    fn notify(&self, notice: Notice) {
        self.notices.lock().push_back(notice);
        // Take the cells lock so the monitor cannot miss the wakeup between checking
        // the notice queue and waiting.
        let _cells = self.cells.lock();
        self.wake.notify_all();
    }
}

pub(super) fn run(shared: Arc<Shared>) {
    loop {
        if shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let notices: Vec<Notice> = shared.notices.lock().drain(..).collect();
        for notice in notices {
            handle(&shared, notice);
        }
        let now = Instant::now();
        let due: Vec<String> = {
            let cells = shared.cells.lock();
            cells.iter().filter(|(_, c)| c.next_start.is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect()
        };
        for name in due {
            launch(&shared, &name);
        }
        let beats: Vec<String> = {
            let cells = shared.cells.lock();
            cells.iter().filter(|(_, c)| next_beat(c).is_some_and(|t| t <= now)).map(|(n, _)| n.clone()).collect()
        };
        for name in beats {
            beat(&shared, &name);
        }
        let mut cells = shared.cells.lock();
        if !shared.notices.lock().is_empty() || shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        // No timer unless a restart or a heartbeat is due: notices, new cells and
        // shutdown all wake us under the cells lock.
        match cells.values().flat_map(|c| [c.next_start, next_beat(c)]).flatten().min() {
            Some(t) => {
                shared.wake.wait_until(&mut cells, t);
            }
            None => shared.wake.wait(&mut cells),
        }
    }
}

pub(super) fn launch(shared: &Arc<Shared>, name: &str) {
    let (spec, generation) = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name) else { return };
        if cell.next_start.is_none_or(|t| t > Instant::now()) {
            return; // an operation cancelled or moved it meanwhile
        }
        let Some(spec) = cell.spec.clone() else { return }; // watched: never scheduled
        cell.next_start = None;
        cell.generation += 1;
        cell.last_instance = None;
        cell.status = CellStatus::Starting;
        cell.launches += 1;
        if cell.launches > 1 {
            shared.hub.count_restart(name);
        }
        (spec, cell.generation)
    };
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    for (k, v) in &spec.env {
        command.env(k, v);
    }
    if let Some(filter) = &spec.log_filter {
        command.env("CELLSHM_LOG_FILTER", filter);
    }
    let mut peer_options = spec.peer.clone();
    peer_options.default_timeout = Some(peer_options.default_timeout.unwrap_or(*shared.default_timeout.lock()));
    let started = shared.hub.add_peer(&spec.name, peer_options).and_then(|ticket| ticket.spawn(&mut command));
    let (peer, child) = match started {
        Ok(pair) => pair,
        Err(e) => {
            ended(shared, name, generation, ExitReason::SpawnFailed(e.to_string()), None);
            return;
        }
    };
    let process = Arc::new(CellProcess::new(child));
    {
        let mut cells = shared.cells.lock();
        match cells.get_mut(name).filter(|c| c.generation == generation) {
            Some(cell) => {
                cell.instance = Some(Instance {
                    peer: peer.clone(),
                    process: process.clone(),
                    up_since: Instant::now(),
                    heartbeat: None,
                });
                cell.last_instance = Some((peer.id(), peer.pid()));
                shared.set_status(name, cell, CellStatus::Starting);
            }
            None => {
                // Stopped, restarted or removed while it was being spawned: this instance
                // was never reported and must not live on.
                drop(cells);
                let _ = process.kill();
                let _ = process.wait_exit(Duration::from_secs(5));
                return;
            }
        }
    }
    let weak = Arc::downgrade(shared);
    let cell_name = name.to_string();
    peer.on_death(move |error| {
        if let Some(shared) = weak.upgrade() {
            shared.notify(Notice::Died { name: cell_name, generation, error: error.clone() });
        }
    });
    let weak = Arc::downgrade(shared);
    let cell_name = name.to_string();
    let timeout = spec.ready_timeout;
    let log_filter = spec.log_filter.clone();
    let _ = std::thread::Builder::new().name("cellshm-ready".into()).spawn(move || {
        let result = peer.wait_ready(timeout);
        if let (Ok(()), Some(filter)) = (&result, log_filter) {
            // Before "ready" is reported: for cells that do not read CELLSHM_LOG_FILTER.
            if let Err(e) = peer.set_log_filter(&filter, Duration::from_secs(2)) {
                tracing::debug!(cell = %peer.name(), "could not set the log filter of the new instance: {e}");
            }
        }
        if let Some(shared) = weak.upgrade() {
            shared.notify(Notice::Ready { name: cell_name, generation, result });
        }
    });
}

/// When the cell's next heartbeat is due, if it is ready and has heartbeats.
fn next_beat(cell: &ManagedCell) -> Option<Instant> {
    if cell.status != CellStatus::Ready {
        return None;
    }
    cell.instance.as_ref()?.heartbeat.as_ref().map(|b| b.next)
}

/// A heartbeat is due: judges the one in flight (answered in time, or a miss), relaunches
/// the cell as unresponsive after too many misses, else sends the next one.
fn beat(shared: &Arc<Shared>, name: &str) {
    let (peer, last, generation, every) = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name).filter(|c| c.status == CellStatus::Ready) else { return };
        let generation = cell.generation;
        let Some(instance) = cell.instance.as_mut() else { return };
        let Some(beating) = instance.heartbeat.as_mut() else { return };
        beating.next = Instant::now() + beating.every.interval;
        (instance.peer.clone(), std::mem::replace(&mut beating.last, LastBeat::None), generation, beating.every)
    };
    // Any answer, an error status included (UNIMPLEMENTED from a cell that does not know
    // the method), came from a thread that serves: the cell is responsive. Dropping one
    // still in flight cancels it.
    let outcome = match &last {
        LastBeat::None => HeartbeatOutcome::NoneSent,
        LastBeat::SendFailed => HeartbeatOutcome::SendFailed,
        LastBeat::InFlight(pending) => match pending.try_take() {
            None => HeartbeatOutcome::Pending,
            Some(Err(e)) if matches!(e.status(), Status::DeadlineExceeded | Status::Cancelled) => {
                HeartbeatOutcome::TimedOut
            }
            Some(_) => HeartbeatOutcome::Answered,
        },
    };
    drop(last);
    let (verdict, misses) = {
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
        let Some(beating) = cell.instance.as_mut().and_then(|i| i.heartbeat.as_mut()) else { return };
        (beating.state.judge(outcome, every.allowed_misses), beating.state.misses)
    };
    if verdict == Verdict::Unresponsive {
        tracing::warn!(
            cell = name,
            "{misses} heartbeats in a row unanswered within {} ms each: killing it as unresponsive",
            every.interval.as_millis()
        );
        if let Some((process, _, _)) = current_process(shared, name, generation) {
            let _ = process.kill();
        }
        ended(shared, name, generation, ExitReason::Unresponsive, None);
        return;
    }
    // Outside the lock: a full ring makes starting a call wait (up to its timeout).
    let sent =
        peer.call_start(builtin::LIFECYCLE_HEARTBEAT, &[], &CallOptions::timeout(every.interval), Box::new(|| {}));
    let mut cells = shared.cells.lock();
    let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
    let Some(beating) = cell.instance.as_mut().and_then(|i| i.heartbeat.as_mut()) else { return };
    match sent {
        Ok(pending) => beating.last = LastBeat::InFlight(pending),
        // Its death is reported by the death notice.
        Err(e) if matches!(e.status(), Status::PeerDead | Status::SessionClosed) => {}
        // Could not even be sent (a ring the cell does not drain): a miss, judged next turn.
        Err(_) => beating.last = LastBeat::SendFailed,
    }
}

/// The instance of `name` if it is of `generation`.
fn current_process(shared: &Shared, name: &str, generation: u64) -> Option<(Arc<CellProcess>, Instant, bool)> {
    let cells = shared.cells.lock();
    let cell = cells.get(name).filter(|c| c.generation == generation)?;
    let instance = cell.instance.as_ref()?;
    Some((instance.process.clone(), instance.up_since, instance.peer.said_goodbye()))
}

fn handle(shared: &Arc<Shared>, notice: Notice) {
    match notice {
        Notice::Ready { name, generation, result } => {
            let timed_out = {
                let mut cells = shared.cells.lock();
                let Some(cell) = cells.get_mut(&name) else { return };
                if cell.generation != generation || cell.status != CellStatus::Starting {
                    return;
                }
                match &result {
                    Ok(()) => {
                        if let (Some(every), Some(instance)) =
                            (cell.spec.as_ref().and_then(|s| s.heartbeat), cell.instance.as_mut())
                        {
                            // The first heartbeat goes out as the cell becomes ready, so
                            // one that never answers is killed interval × (misses + 1)
                            // after it was ready.
                            instance.heartbeat = Some(Beating {
                                every,
                                next: Instant::now(),
                                last: LastBeat::None,
                                state: Default::default(),
                            });
                        }
                        shared.set_status(&name, cell, CellStatus::Ready);
                        return;
                    }
                    Err(e) if e.status() == Status::DeadlineExceeded => {
                        cell.instance.as_ref().map(|i| i.process.clone())
                    }
                    // It died before it was ready: the death notice decides.
                    Err(_) => return,
                }
            };
            if let Some(process) = timed_out {
                let _ = process.kill();
                let _ = process.wait_exit(Duration::from_secs(5));
                ended(shared, &name, generation, ExitReason::ReadyTimeout, None);
            }
        }
        Notice::Died { name, generation, error } => {
            let Some((process, up_since, leaving)) = current_process(shared, &name, generation) else { return };
            // The doorbell closes as the process exits: give it a moment to be reaped.
            let status = process
                .wait_exit(Duration::from_millis(500))
                .ok()
                .and_then(|_| process.try_exit_status().ok().flatten());
            let reason = if error.status() == Status::ProtocolError {
                let _ = process.kill();
                ExitReason::ProtocolError(error.message().to_string())
            } else if leaving {
                ExitReason::Goodbye
            } else {
                match status.and_then(|s| s.signal().map(ExitReason::Signal).or(s.code().map(ExitReason::Code))) {
                    Some(reason) => reason,
                    None => {
                        let _ = process.kill();
                        ExitReason::Signal(libc::SIGKILL)
                    }
                }
            };
            ended(shared, &name, generation, reason, Some(up_since.elapsed()));
        }
    }
}

/// An instance of `name` ended for `reason` after `uptime` (see
/// [`policy::RestartState::on_exit`]): the policy decides, this carries it out.
fn ended(shared: &Arc<Shared>, name: &str, generation: u64, reason: ExitReason, uptime: Option<Duration>) {
    if !matches!(reason, ExitReason::Goodbye | ExitReason::Code(0)) {
        let instance = {
            let mut cells = shared.cells.lock();
            let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
            cell.instance.take()
        };
        // Reaped outside the lock: waiting for a process must not hold up every other call.
        if let Some(instance) = instance {
            let _ = instance.process.wait_exit(Duration::from_secs(5));
        }
    }
    let mut cells = shared.cells.lock();
    let Some(cell) = cells.get_mut(name).filter(|c| c.generation == generation) else { return };
    cell.instance = None;
    let Some(spec) = &cell.spec else { return }; // watched peers have no instance to end
    let status = match cell.restart.on_exit(&spec.restart, &reason, uptime) {
        Decision::Exited => CellStatus::Exited(reason),
        Decision::Relaunch { after } => {
            cell.next_start = Some(Instant::now() + after);
            CellStatus::Crashed(reason)
        }
        Decision::GiveUp => CellStatus::Failed(reason),
    };
    shared.set_status(name, cell, status);
}
