//! The device worker: a thread that waits on the queue notification eventfds, any extra file
//! descriptors the device needs (a TAP), and a stop eventfd, with epoll, and hands each ready
//! source to the device's handler. Extra descriptors are watched edge-triggered.
//! Worker threads run under the guest-facing system-call filter (`seccomp`).

use std::os::unix::io::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A running worker; dropping it without `stop` leaves the thread running until process exit.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread named `name` calling `handle(queue_index)` whenever a queue is notified.
    pub fn spawn<F>(name: String, queue_events: Vec<EventFd>, handle: F) -> std::io::Result<Worker>
    where
        F: FnMut(usize) + Send + 'static,
    {
        Self::spawn_with_fds(name, queue_events, &[], handle)
    }

    /// Like `spawn`, also calling `handle(queue_count + i)` when `extra_fds[i]` becomes readable.
    pub fn spawn_with_fds<F>(
        name: String,
        queue_events: Vec<EventFd>,
        extra_fds: &[RawFd],
        mut handle: F,
    ) -> std::io::Result<Worker>
    where
        F: FnMut(usize) + Send + 'static,
    {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stop_for_thread = stop.try_clone()?;
        let epoll = Epoll::new()?;
        let stop_token = (queue_events.len() + extra_fds.len()) as u64;
        for (index, event) in queue_events.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                event_fd(event),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        for (offset, &fd) in extra_fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    (queue_events.len() + offset) as u64,
                ),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            event_fd(&stop_for_thread),
            EpollEvent::new(EventSet::IN, stop_token),
        )?;
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(e) = crate::seccomp::filter_this_thread() {
                    return eprintln!("vireo-vmm: {name} not started: {e}");
                }
                // Drivers may notify (and data may arrive) before the worker started: look at every
                // source once.
                for index in 0..stop_token as usize {
                    handle(index);
                }
                let mut ready = vec![EpollEvent::default(); stop_token as usize + 1];
                loop {
                    let count = match epoll.wait(-1, &mut ready) {
                        Ok(count) => count,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    for event in &ready[..count] {
                        let token = event.data();
                        if token == stop_token {
                            return;
                        }
                        if let Some(queue_event) = queue_events.get(token as usize) {
                            // Drain the counter; several notifications are served by one pass.
                            let _ = queue_event.read();
                        }
                        handle(token as usize);
                    }
                }
            })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Stops the worker `slot` holds, if one runs (a device reset).
pub fn stop(slot: &mut Option<Worker>) {
    if let Some(worker) = slot.take() {
        worker.stop();
    }
}

fn event_fd(event: &EventFd) -> RawFd {
    event.as_raw_fd()
}
