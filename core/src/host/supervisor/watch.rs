//! Peers the supervisor watches but does not launch (a remote gRPC server added with
//! `cellshm_grpc`'s `AddRemote`): a name among the cells, with statuses and events, whose
//! health a watcher reports. The supervisor never starts, stops or relaunches it.

use super::*;

/// The reporting end of a watched peer ([`Supervisor::watch`]). Its status starts as
/// [`CellStatus::Starting`]; [`WatchedPeer::report`] moves it between
/// [`CellStatus::Ready`] and [`CellStatus::Unavailable`], with an event on each change.
/// It holds the supervisor weakly: once the supervisor is dropped, or the name removed,
/// reports change nothing and [`WatchedPeer::is_watched`] is false, so a polling task
/// knows to end.
#[derive(Clone)]
pub struct WatchedPeer {
    shared: std::sync::Weak<Shared>,
    name: String,
    /// Which entry of that name: one removed and watched (or added) again is another.
    key: u64,
}

impl fmt::Debug for WatchedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedPeer").field("name", &self.name).field("watched", &self.is_watched()).finish()
    }
}

impl Supervisor {
    /// Adds `name` as a peer the supervisor watches but does not launch: it is listed by
    /// [`Supervisor::names`], has a [`Supervisor::status`] and events like a cell, and
    /// its health is what the returned [`WatchedPeer`] reports. [`Supervisor::remove`]
    /// forgets it; start, stop, restart, update and calls through the supervisor answer
    /// FAILED_PRECONDITION (there is no instance). ALREADY_EXISTS if the name is taken.
    pub fn watch(&self, name: &str) -> Result<WatchedPeer> {
        let mut cells = self.shared.cells.lock();
        if cells.contains_key(name) {
            return Err(Error::new(Status::AlreadyExists, format!("a cell named {name:?} is already supervised")));
        }
        let key = self.shared.next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cell = cells.entry(name.to_string()).or_insert(ManagedCell::new(key, None));
        self.shared.queue_event(name, cell, CellStatus::Starting);
        Ok(WatchedPeer { shared: Arc::downgrade(&self.shared), name: name.to_string(), key })
    }
}

impl WatchedPeer {
    /// The name it is watched under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reports a health check: `Ok` is [`CellStatus::Ready`], an error
    /// [`CellStatus::Unavailable`] with the error's text. An event goes out when the status
    /// changes between the two (not for a second failure with another message).
    pub fn report(&self, health: Result<()>) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut cells = shared.cells.lock();
        let Some(cell) = cells.get_mut(&self.name).filter(|c| c.key == self.key) else { return };
        let status = match health {
            Ok(()) => CellStatus::Ready,
            Err(e) => CellStatus::Unavailable(e.to_string()),
        };
        if std::mem::discriminant(&status) != std::mem::discriminant(&cell.status) {
            shared.set_status(&self.name, cell, status);
            shared.wake.notify_all();
        }
    }

    /// False once the supervisor is dropped or the name removed (or taken by another).
    pub fn is_watched(&self) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|shared| shared.cells.lock().get(&self.name).is_some_and(|c| c.key == self.key))
    }
}
