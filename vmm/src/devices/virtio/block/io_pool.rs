//! The block device's I/O threads, for requests that may block on storage: those run in
//! parallel, so a queue depth of 32 in the guest is a queue depth of up to `IO_THREADS` on the
//! host. Threads start when a job finds none free (none before the first cold read, so a VM
//! starts without them). Dropping the pool lets the threads finish every job handed over, then
//! joins them.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::devices::bus::lock;

/// Most threads per block device.
pub const IO_THREADS: usize = 16;

/// One unit of work.
pub type Job = Box<dyn FnOnce() + Send>;

/// Up to `limit` threads running jobs in the order they are handed over.
pub struct IoPool {
    name: String,
    limit: usize,
    jobs: Option<Sender<Job>>,
    receiver: Arc<Mutex<Receiver<Job>>>,
    /// Threads waiting for a job minus jobs waiting for a thread.
    spare: Arc<AtomicIsize>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl IoPool {
    /// A pool of up to `limit` threads named `{name}-io{i}`, under the guest-facing system-call
    /// filter; none runs yet.
    pub fn new(name: &str, limit: usize) -> IoPool {
        let (sender, receiver) = channel::<Job>();
        IoPool {
            name: name.to_owned(),
            limit,
            jobs: Some(sender),
            receiver: Arc::new(Mutex::new(receiver)),
            spare: Arc::default(),
            threads: Mutex::default(),
        }
    }

    /// Hands `job` to the next free thread, starting one when none is free and the limit
    /// allows. When no thread runs and none can start, the job runs here.
    pub fn submit(&self, job: Job) {
        let no_thread_free = self.spare.fetch_sub(1, Ordering::SeqCst) <= 0;
        if no_thread_free && !self.grow() && lock(&self.threads).is_empty() {
            self.spare.fetch_add(1, Ordering::SeqCst);
            return job();
        }
        if let Some(jobs) = &self.jobs {
            // The threads only stop once the pool drops the sender.
            let _ = jobs.send(job);
        }
    }

    /// Starts one more thread unless the limit is reached; whether it started.
    fn grow(&self) -> bool {
        let mut threads = lock(&self.threads);
        if threads.len() >= self.limit {
            return false;
        }
        let (receiver, spare) = (self.receiver.clone(), self.spare.clone());
        let started = std::thread::Builder::new()
            .name(format!("{}-io{}", self.name, threads.len()))
            .spawn(move || run_jobs(&receiver, &spare));
        match started {
            Ok(thread) => {
                threads.push(thread);
                true
            }
            Err(e) => {
                eprintln!("vireo-vmm: block I/O thread not started: {e}");
                false
            }
        }
    }
}

/// A pool thread's life: one job after another, the thread counted in `spare` each time it
/// waits for one.
fn run_jobs(receiver: &Mutex<Receiver<Job>>, spare: &AtomicIsize) {
    if let Err(e) = crate::seccomp::filter_this_thread() {
        return eprintln!("vireo-vmm: block I/O thread not started: {e}");
    }
    loop {
        spare.fetch_add(1, Ordering::SeqCst);
        // The lock is held only while waiting for the next job, never while running one.
        let job = lock(receiver).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    #[test]
    fn every_job_handed_over_runs_before_the_pool_is_gone() {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = IoPool::new("test", 3);
        for _ in 0..100 {
            let done = done.clone();
            pool.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn threads_start_only_as_jobs_need_them_and_up_to_the_limit() {
        let pool = IoPool::new("test", 4);
        assert_eq!(lock(&pool.threads).len(), 0, "no thread before a job");
        for _ in 0..3 {
            let (sender, receiver) = std::sync::mpsc::channel();
            pool.submit(Box::new(move || sender.send(()).unwrap()));
            receiver.recv().unwrap();
            // The thread counts itself free just after the job ends.
            while pool.spare.load(Ordering::SeqCst) < 1 {
                std::thread::yield_now();
            }
        }
        assert_eq!(
            lock(&pool.threads).len(),
            1,
            "jobs one after another share a thread"
        );
        // Four jobs that can only end together: each needs a thread of its own.
        let together = Arc::new(Barrier::new(4 + 1));
        for _ in 0..4 {
            let together = together.clone();
            pool.submit(Box::new(move || {
                together.wait();
            }));
        }
        together.wait();
        assert_eq!(
            lock(&pool.threads).len(),
            4,
            "one thread per job running at once"
        );
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            let done = done.clone();
            pool.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert!(lock(&pool.threads).len() <= 4, "never more than the limit");
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }
}
