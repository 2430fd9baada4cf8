//! The synchronisation primitives the runtime and the host use: parking_lot and std
//! atomics normally, loom's checked versions under `--cfg loom` (tokio's pattern), behind
//! one API (parking_lot's: `lock()` without poisoning, `try_lock() -> Option`,
//! `Condvar::wait(&mut guard)`). Every module of `runtime/` and `host/` takes its locks
//! from here, so any of their protocols can be put in a loom model.

#[cfg(not(all(test, loom)))]
pub(crate) use self::unchecked::UnsafeCell;
#[cfg(not(all(test, loom)))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

#[cfg(all(test, loom))]
pub(crate) use self::checked::{Condvar, Mutex, MutexGuard, RwLock};
#[cfg(all(test, loom))]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

#[cfg(not(all(test, loom)))]
mod unchecked {
    /// `std::cell::UnsafeCell` with loom's face: access through a closure, so that
    /// under loom every access is checked for races.
    #[derive(Debug, Default)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// A level-triggered kick for loom models, like the eventfds the runtime sleeps on: a
/// kick sent before anybody waits is still there when somebody does.
#[cfg(all(test, loom))]
#[derive(Debug, Default)]
pub(crate) struct Bell {
    rung: loom::sync::Mutex<bool>,
    cv: loom::sync::Condvar,
}

#[cfg(all(test, loom))]
impl Bell {
    pub(crate) fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_all();
    }

    pub(crate) fn wait(&self) {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            rung = self.cv.wait(rung).unwrap();
        }
        *rung = false;
    }
}

#[cfg(all(test, loom))]
mod checked {
    use std::ops::{Deref, DerefMut};

    /// loom's mutex with parking_lot's face.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// A guard a [`Condvar`] can wait on in place.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("no poisoning under loom")))
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().expect("no poisoning under loom")
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|guard| MutexGuard(Some(guard)))
        }

        /// Under loom a lock is "locked" if it cannot be taken right now.
        pub(crate) fn is_locked(&self) -> bool {
            self.0.try_lock().is_err()
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("held")
        }
    }

    /// loom's reader-writer lock with parking_lot's face.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> RwLock<T> {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("no poisoning under loom")
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("no poisoning under loom")
        }
    }

    /// What a wait with a deadline returned.
    pub(crate) struct WaitTimeout;

    impl WaitTimeout {
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    /// loom's condition variable with parking_lot's face.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("held");
            guard.0 = Some(self.0.wait(inner).expect("no poisoning under loom"));
        }

        /// Under loom a wait never times out (time does not pass in a model): only a
        /// notify ends it, which is what the models check.
        pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, _until: std::time::Instant) -> WaitTimeout {
            self.wait(guard);
            WaitTimeout
        }

        /// As `wait_until`: only a notify ends it.
        pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, _timeout: std::time::Duration) -> WaitTimeout {
            self.wait(guard);
            WaitTimeout
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
