//! Async waits on futex words in shared memory, without a thread per wait: one thread
//! per process sleeps in FUTEX_WAITV on every word a future registered (and one of its
//! own, to learn of new registrations), and wakes a future once its word changed. What a topic subscriber's `poll_recv` parks on: the publisher bumps and
//! wakes the word it sleeps on, so an async subscriber costs the publisher exactly what
//! a sleeping one does.
//!
//! The thread starts at the first registration and stays. Past
//! [`crate::sys::futex::WAIT_ANY_MAX`] words at once (or on a kernel without FUTEX_WAITV)
//! it looks at the words every millisecond instead of sleeping on them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::Duration;

use crate::runtime::sync::Mutex;
use crate::sys::futex::{self, WaitAny, WAIT_ANY_MAX};

/// A futex word a future waits on, and what keeps the memory it lies in mapped.
pub(crate) trait FutexWord: Send + Sync {
    fn word(&self) -> &AtomicU32;
}

struct Registration {
    word: Arc<dyn FutexWord>,
    expected: u32,
    waker: Waker,
}

struct Reactor {
    registrations: Mutex<Vec<Registration>>,
    /// Bumped and woken whenever a registration is added: the thread's own word.
    changed: AtomicU32,
}

/// How often words are looked at when they cannot all be slept on.
const POLL: Duration = Duration::from_millis(1);

fn reactor() -> &'static Reactor {
    static REACTOR: OnceLock<&'static Reactor> = OnceLock::new();
    REACTOR.get_or_init(|| {
        let reactor: &'static Reactor =
            Box::leak(Box::new(Reactor { registrations: Mutex::new(Vec::new()), changed: AtomicU32::new(0) }));
        std::thread::Builder::new()
            .name("cellshm-futex".into())
            .spawn(move || reactor.run())
            .expect("spawning cellshm's futex reactor thread");
        reactor
    })
}

/// Wakes `waker` once `word` no longer holds `expected` (at once if it does not now).
/// Only a change counts: a bare FUTEX_WAKE that came before the thread slept on the word
/// would be lost, so whoever must wake a future without changing a word wakes its waker
/// itself. A future registers again each time it is polled and still waits; a waker
/// registered twice is woken once.
pub(crate) fn wake_on(word: Arc<dyn FutexWord>, expected: u32, waker: &Waker) {
    let reactor = reactor();
    {
        let mut registrations = reactor.registrations.lock();
        registrations.retain(|r| !r.waker.will_wake(waker));
        registrations.push(Registration { word, expected, waker: waker.clone() });
    }
    reactor.changed.fetch_add(1, Ordering::Release);
    futex::wake_all(&reactor.changed);
}

impl Reactor {
    fn run(&self) {
        loop {
            let changed = self.changed.load(Ordering::Acquire);
            let waiting: Vec<(Arc<dyn FutexWord>, u32)> =
                self.registrations.lock().iter().map(|r| (r.word.clone(), r.expected)).collect();
            let outcome = if waiting.len() < WAIT_ANY_MAX {
                let mut words: Vec<(&AtomicU32, u32)> = vec![(&self.changed, changed)];
                words.extend(waiting.iter().map(|(word, expected)| (word.word(), *expected)));
                futex::wait_any(&words, None)
            } else {
                WaitAny::Unsupported
            };
            if outcome == WaitAny::Unsupported {
                futex::wait(&self.changed, changed, POLL);
            }
            self.wake_changed();
        }
    }

    /// Wakes (and forgets) every registration whose word changed.
    fn wake_changed(&self) {
        let ready: Vec<Waker> = {
            let mut registrations = self.registrations.lock();
            let mut ready = Vec::new();
            registrations.retain(|r| {
                if r.word.word().load(Ordering::Acquire) != r.expected {
                    ready.push(r.waker.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for waker in ready {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Word(AtomicU32);

    impl FutexWord for Word {
        fn word(&self) -> &AtomicU32 {
            &self.0
        }
    }

    struct Flag(std::sync::Mutex<bool>, std::sync::Condvar, AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.2.store(true, Ordering::SeqCst);
            self.1.notify_all();
        }
    }

    fn wait_woken(flag: &Flag) {
        let mut woken = flag.0.lock().unwrap();
        while !*woken {
            woken = flag.1.wait(woken).unwrap();
        }
    }

    #[test]
    fn a_registered_waker_wakes_when_its_word_changes_and_not_before() {
        let new_flag =
            || Arc::new(Flag(std::sync::Mutex::new(false), std::sync::Condvar::new(), AtomicBool::new(false)));
        let word = Arc::new(Word(AtomicU32::new(7)));
        let flag = new_flag();
        wake_on(word.clone(), 7, &Waker::from(flag.clone()));
        // A wake with the value unchanged is no reason (a lost one could never be told
        // from it): the waker waits for the change.
        futex::wake_all(&word.0);
        assert!(!flag.2.load(Ordering::SeqCst), "woken before its word changed");
        word.0.store(8, Ordering::SeqCst);
        futex::wake_all(&word.0);
        wait_woken(&flag);
        // A change made before the registration is seen at once.
        let flag = new_flag();
        wake_on(word.clone(), 7, &Waker::from(flag.clone()));
        wait_woken(&flag);
        // More words than one FUTEX_WAITV takes, each woken by its own change.
        let words: Vec<Arc<Word>> = (0..200).map(|_| Arc::new(Word(AtomicU32::new(0)))).collect();
        let flags: Vec<Arc<Flag>> = (0..200).map(|_| new_flag()).collect();
        for (word, flag) in words.iter().zip(&flags) {
            wake_on(word.clone(), 0, &Waker::from(flag.clone()));
        }
        for (word, flag) in words.iter().zip(&flags) {
            word.0.store(1, Ordering::SeqCst);
            futex::wake_all(&word.0);
            wait_woken(flag);
        }
    }
}
