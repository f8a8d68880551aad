//! Password hashing and verification on a few dedicated threads.
//!
//! Argon2id fills 19 MiB per hash and takes tens of milliseconds of CPU. Run on
//! `spawn_blocking`, every concurrent sign-in got a thread and 19 MiB of its own (64 of them
//! took the process from 230 MB to 1.4 GB), and the allocator's per-thread arenas kept much of
//! it afterwards. Here a fixed number of threads (the cores, at most [`MAX_THREADS`]) do all of
//! it, each reusing one working memory, so hashing holds at most `threads × 19 MiB` whatever
//! the load. Callers queue (a bounded queue); when it is full, or the wait is longer than
//! [`WAIT`], they get [`Busy`] at once, which the HTTP layer answers with 503 and
//! `Retry-After`. A caller that gave up is not worked for.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use zivio_core::password::{self, Memory};

use crate::random;

/// Hashing threads never exceed this, whatever the number of cores: 4 × 19 MiB bounds the
/// memory hashing can take.
pub const MAX_THREADS: usize = 4;
/// Requests that may wait per hashing thread.
pub const QUEUE_PER_THREAD: usize = 16;
/// The longest a request waits for a hashing thread.
pub const WAIT: Duration = Duration::from_secs(5);
/// What `Retry-After` says when hashing is busy.
pub const RETRY_AFTER_SECONDS: u64 = 2;

/// The hashing threads are all busy and the queue is full, or the wait was too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is busy")]
pub struct Busy;

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

pub struct HashingPool {
    jobs: SyncSender<Job>,
    wait: Duration,
    threads: usize,
}

impl HashingPool {
    /// Starts `threads` (at least 1) hashing threads with room for `queue` waiting requests;
    /// a request waits at most `wait`. The threads end when the pool is dropped.
    pub fn start(threads: usize, queue: usize, wait: Duration) -> Self {
        let threads = threads.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("zivio-password-{index}"))
                .spawn(move || work(&receiver))
                .expect("the operating system starts a thread");
        }
        HashingPool {
            jobs,
            wait,
            threads,
        }
    }

    /// The process-wide pool: one per process, so its memory bound holds for the process
    /// whatever the number of services in it. Started on first use.
    pub fn global() -> &'static HashingPool {
        static POOL: OnceLock<HashingPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let threads = cores.clamp(1, MAX_THREADS);
            HashingPool::start(threads, threads * QUEUE_PER_THREAD, WAIT)
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The Argon2id PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        let salt = random();
        self.run(move |memory| password::hash_in(&password, salt, memory))
            .await
    }

    /// Whether `password` matches the stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, Busy> {
        self.run(move |memory| password::verify_in(&password, &phc, memory))
            .await
    }

    /// Runs `work` on a hashing thread, or refuses at once when the queue is full; gives up
    /// waiting after the pool's wait.
    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> R + Send + 'static,
    ) -> Result<R, Busy> {
        let answer = self.submit(work)?;
        match tokio::time::timeout(self.wait, answer).await {
            Ok(Ok(result)) => Ok(result),
            // Waited too long, or the work panicked.
            Ok(Err(_)) | Err(_) => Err(Busy),
        }
    }

    /// Queues `work`, or refuses when the queue is full. Dropping the receiver withdraws it.
    fn submit<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> R + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<R>, Busy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The caller gave up waiting: its work would be wasted.
            if !reply.is_closed() {
                let _ = reply.send(work(memory));
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

/// One hashing thread: takes jobs until the pool is gone, always in the same memory.
fn work(jobs: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::new();
    loop {
        // The lock is held only while waiting for the next job, not while working.
        let next = jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(job) = next else { return };
        // A panicking job must not take the thread (and its share of the capacity) with it.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("password hashing panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test]
    async fn hashes_and_verifies_on_the_pool() {
        let pool = HashingPool::start(1, 4, WAIT);
        let phc = pool.hash("correct horse battery".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            pool.verify("correct horse battery".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong".into(), phc).await.unwrap());
    }

    /// Holds the pool's (one) thread until the returned barrier is passed.
    fn hold_the_thread(pool: &HashingPool) -> (Arc<Barrier>, tokio::sync::oneshot::Receiver<u8>) {
        let started = Arc::new(Barrier::new(2));
        let gate = Arc::new(Barrier::new(2));
        let (held_started, held_gate) = (started.clone(), gate.clone());
        let held = pool
            .submit(move |_| {
                held_started.wait();
                held_gate.wait();
                1
            })
            .unwrap();
        started.wait();
        (gate, held)
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let pool = HashingPool::start(1, 1, Duration::from_secs(30));
        let (gate, held) = hold_the_thread(&pool);
        // The thread works; one more fits in the queue; the next is refused without waiting.
        let queued = pool.submit(|_| 2).unwrap();
        let refused_at = tokio::time::Instant::now();
        assert_eq!(pool.run(|_| 3).await, Err(Busy));
        assert!(refused_at.elapsed() < Duration::from_secs(1));
        gate.wait();
        assert_eq!(held.await, Ok(1));
        assert_eq!(queued.await, Ok(2));
        assert_eq!(pool.run(|_| 4).await, Ok(4), "free again");
    }

    #[tokio::test]
    async fn a_wait_past_the_limit_is_refused_and_not_worked_for() {
        let pool = HashingPool::start(1, 4, Duration::from_millis(100));
        let (gate, held) = hold_the_thread(&pool);
        let worked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = worked.clone();
        let timed_out = pool
            .run(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .await;
        assert_eq!(timed_out, Err(Busy));
        gate.wait();
        assert_eq!(held.await, Ok(1));
        assert_eq!(pool.run(|_| 5).await, Ok(5));
        assert!(
            !worked.load(std::sync::atomic::Ordering::SeqCst),
            "a request that gave up is skipped"
        );
    }

    #[tokio::test]
    async fn more_waiters_than_threads_are_all_answered() {
        let pool = Arc::new(HashingPool::start(2, 64, Duration::from_secs(60)));
        let phc = pool.hash("correct horse battery".into()).await.unwrap();
        let mut tasks = Vec::new();
        for index in 0..24 {
            let (pool, phc) = (pool.clone(), phc.clone());
            tasks.push(tokio::spawn(async move {
                let guess = if index % 3 == 0 {
                    "correct horse battery".to_owned()
                } else {
                    format!("wrong guess {index}")
                };
                (index, pool.verify(guess, phc).await)
            }));
        }
        for task in tasks {
            let (index, answer) = task.await.unwrap();
            assert_eq!(answer, Ok(index % 3 == 0), "waiter {index}");
        }
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_take_its_thread() {
        let pool = HashingPool::start(1, 4, WAIT);
        assert_eq!(pool.run(|_| -> u8 { panic!("boom") }).await, Err(Busy));
        assert_eq!(pool.run(|_| 7).await, Ok(7));
    }
}
