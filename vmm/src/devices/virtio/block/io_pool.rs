//! The block device's I/O threads, for requests that may block on storage: those run in
//! parallel, so a queue depth of 32 in the guest is a queue depth of up to `IO_THREADS` on the
//! host. Dropping the pool lets the threads finish every job handed over, then joins them.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::devices::bus::lock;

/// Threads per block device.
pub const IO_THREADS: usize = 16;

/// One unit of work.
pub type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in the order they are handed over.
pub struct IoPool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// Starts `count` threads named `{name}-io{i}`, under the guest-facing system-call filter.
    pub fn start(name: &str, count: usize) -> std::io::Result<IoPool> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..count)
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-io{i}"))
                    .spawn(move || run_jobs(&receiver))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(IoPool {
            jobs: Some(sender),
            threads,
        })
    }

    /// Hands `job` to the next free thread.
    pub fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The threads only stop once the pool drops the sender.
            let _ = jobs.send(job);
        }
    }
}

fn run_jobs(receiver: &Mutex<Receiver<Job>>) {
    if let Err(e) = crate::seccomp::filter_this_thread() {
        return eprintln!("vireo-vmm: block I/O thread not started: {e}");
    }
    loop {
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
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_job_handed_over_runs_before_the_pool_is_gone() {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = IoPool::start("test", 3).unwrap();
        for _ in 0..100 {
            let done = done.clone();
            pool.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }
}
