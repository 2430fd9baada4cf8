//! A bounded pool of threads for the stream handlers of one link.
//!
//! A stream handler is user code that runs as long as its stream: it cannot run on the
//! receive path, and one OS thread per stream would let a peer choose how many threads
//! we run. The pool starts threads as streams need them, up to its bound, and keeps
//! them: an idle one sleeps on a condition variable with no timer. A task beyond the
//! bound waits in the queue for a thread (the link bounds how many streams are open, so
//! the queue is bounded too); its stream's caller cannot send before the handler
//! starts, because the callee's first credit goes out only then.
//!
//! Rules, each a reason no task waits for nobody (`loom_model` below):
//! - the queue, the count of idle threads and `stopped` change only under the lock, and
//!   a thread checks for work and goes to sleep under that same lock;
//! - a submitted task wakes an idle thread if there is one, else starts a thread if the
//!   bound allows, else waits for a running thread to come back for it;
//! - stopping wakes everyone and takes the queued tasks out (the link they were for has
//!   failed); each thread leaves after its task. The threads are joined by whoever
//!   closes the link ([`TaskPool::take_threads`]), after every lock is let go.

use std::collections::VecDeque;
use std::sync::Arc;

use super::sync::{Condvar, Mutex};

/// A unit of work for the pool.
pub(crate) type Task = Box<dyn FnOnce() + Send>;

/// Starts a thread named as given running the given body, and returns its handle
/// (`H`: an OS thread's, or a loom model's).
pub(crate) type Spawner<H> = fn(String, Task) -> std::io::Result<H>;

struct State<H> {
    queue: VecDeque<Task>,
    threads: usize,
    idle: usize,
    stopped: bool,
    handles: Vec<H>,
}

/// The pool, of threads with handles `H`.
pub(crate) struct TaskPool<H = std::thread::JoinHandle<()>> {
    name: String,
    max_threads: usize,
    spawn: Spawner<H>,
    state: Mutex<State<H>>,
    wake: Condvar,
}

/// Why a task was not taken (the task comes back, to be dropped outside any lock).
pub(crate) enum Refused {
    /// The pool was stopped.
    Stopped(Task),
    /// No thread runs and none could be started.
    NoThread(Task, std::io::Error),
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Stopped(_) => f.write_str("Stopped"),
            Refused::NoThread(_, e) => write!(f, "NoThread({e})"),
        }
    }
}

impl<H> std::fmt::Debug for TaskPool<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPool").field("name", &self.name).field("max_threads", &self.max_threads).finish()
    }
}

impl<H: Send + 'static> TaskPool<H> {
    /// A pool of at most `max_threads` (at least 1) threads named `name`.
    pub(crate) fn new(name: impl Into<String>, max_threads: usize, spawn: Spawner<H>) -> Arc<TaskPool<H>> {
        let state = State { queue: VecDeque::new(), threads: 0, idle: 0, stopped: false, handles: Vec::new() };
        Arc::new(TaskPool {
            name: name.into(),
            max_threads: max_threads.max(1),
            spawn,
            state: Mutex::new(state),
            wake: Condvar::new(),
        })
    }

    /// Runs `task` on a pool thread: an idle one, a new one within the bound, or the
    /// next one to finish its task.
    pub(crate) fn submit(self: &Arc<Self>, task: Task) -> Result<(), Refused> {
        let mut state = self.state.lock();
        if state.stopped {
            return Err(Refused::Stopped(task));
        }
        state.queue.push_back(task);
        if state.idle > 0 {
            self.wake.notify_one();
            return Ok(());
        }
        if state.threads >= self.max_threads {
            // Every thread is busy: the first one back takes it.
            return Ok(());
        }
        state.threads += 1;
        let pool = self.clone();
        match (self.spawn)(self.name.clone(), Box::new(move || pool.run())) {
            Ok(handle) => {
                state.handles.push(handle);
                Ok(())
            }
            Err(e) => {
                state.threads -= 1;
                if state.threads > 0 {
                    // A running thread will come back for it.
                    return Ok(());
                }
                let task = state.queue.pop_back().expect("queued above, under the same lock");
                Err(Refused::NoThread(task, e))
            }
        }
    }

    fn run(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(task) = state.queue.pop_front() {
                drop(state);
                task();
                state = self.state.lock();
                continue;
            }
            if state.stopped {
                state.threads -= 1;
                return;
            }
            state.idle += 1;
            self.wake.wait(&mut state);
            state.idle -= 1;
        }
    }

    /// Stops taking tasks and wakes every thread to leave; returns the tasks still
    /// queued, never to run (drop them outside the caller's locks).
    pub(crate) fn stop(&self) -> Vec<Task> {
        let mut state = self.state.lock();
        state.stopped = true;
        self.wake.notify_all();
        state.queue.drain(..).collect()
    }

    /// The threads started so far, to join once the pool is stopped (with no lock
    /// held; a pool thread must skip itself).
    pub(crate) fn take_threads(&self) -> Vec<H> {
        std::mem::take(&mut self.state.lock().handles)
    }

    /// Threads started and not yet ended.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn threads(&self) -> usize {
        self.state.lock().threads
    }
}

/// Starts a named OS thread.
pub(crate) fn os_thread(name: String, body: Task) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(body)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn threads_start_up_to_the_bound_and_the_rest_wait_for_one() {
        let pool = TaskPool::new("test-pool", 2, os_thread);
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let release = Arc::new(std::sync::Mutex::new(release));
        for i in 0..5 {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            pool.submit(Box::new(move || {
                started_tx.send(i).unwrap();
                release.lock().unwrap().recv().unwrap();
            }))
            .unwrap();
        }
        let mut first: Vec<i32> = (0..2).map(|_| started.recv().unwrap()).collect();
        first.sort();
        assert_eq!(first, [0, 1], "two threads take the first two tasks, in order");
        assert_eq!(pool.threads(), 2, "no third thread");
        assert!(started.try_recv().is_err(), "the rest wait");
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        let mut rest: Vec<i32> = (0..3).map(|_| started.recv().unwrap()).collect();
        rest.sort();
        assert_eq!(rest, [2, 3, 4]);
        assert!(pool.stop().is_empty());
        for handle in pool.take_threads() {
            handle.join().unwrap();
        }
        assert_eq!(pool.threads(), 0);
        assert!(matches!(pool.submit(Box::new(|| {})), Err(Refused::Stopped(_))));
    }

    #[test]
    fn a_pool_that_cannot_start_a_thread_gives_the_task_back() {
        fn no_threads(_: String, _: Task) -> std::io::Result<std::thread::JoinHandle<()>> {
            Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "thread limit"))
        }
        let pool = TaskPool::new("test-pool", 4, no_threads);
        match pool.submit(Box::new(|| {})) {
            Err(Refused::NoThread(_, e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.threads(), 0);
        assert!(pool.stop().is_empty() && pool.take_threads().is_empty());
    }

    #[test]
    fn stopping_hands_back_the_queued_tasks_unrun() {
        let pool = TaskPool::new("test-pool", 1, os_thread);
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            started_tx.send(()).unwrap();
            release.recv().unwrap();
        }))
        .unwrap();
        started.recv().unwrap();
        pool.submit(Box::new(|| panic!("a queued task ran after stop"))).unwrap();
        assert_eq!(pool.stop().len(), 1);
        release_tx.send(()).unwrap();
        for handle in pool.take_threads() {
            handle.join().unwrap();
        }
        assert_eq!(pool.threads(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::*;

    fn loom_thread(_: String, body: Task) -> std::io::Result<loom::thread::JoinHandle<()>> {
        Ok(loom::thread::spawn(body))
    }

    /// Two tasks submitted to a one-thread pool from two threads, the thread going idle
    /// in between: both run, and stopping ends the thread. A lost wakeup leaves a task
    /// queued with its thread asleep, which loom reports as a deadlock at the join.
    #[test]
    fn loom_every_task_runs_and_stopping_ends_every_thread() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let pool = TaskPool::new("loom", 1, loom_thread);
            let ran = Arc::new((loom::sync::Mutex::new(0usize), loom::sync::Condvar::new()));
            let submit = |pool: &Arc<TaskPool<loom::thread::JoinHandle<()>>>,
                          ran: &Arc<(loom::sync::Mutex<usize>, loom::sync::Condvar)>| {
                let ran = ran.clone();
                pool.submit(Box::new(move || {
                    *ran.0.lock().unwrap() += 1;
                    ran.1.notify_all();
                }))
                .unwrap();
            };
            let other = {
                let (pool, ran) = (pool.clone(), ran.clone());
                loom::thread::spawn(move || submit(&pool, &ran))
            };
            submit(&pool, &ran);
            other.join().unwrap();
            let mut count = ran.0.lock().unwrap();
            while *count < 2 {
                count = ran.1.wait(count).unwrap();
            }
            drop(count);
            assert!(pool.stop().is_empty());
            for handle in pool.take_threads() {
                handle.join().unwrap();
            }
        });
    }
}
