//! The adaptive poll window of the io_uring worker: while I/O is in flight, after a pass that
//! found nothing more to do, the worker spins for a while watching the ring's completions and
//! the driver's queue instead of sleeping in epoll (a sleep and the wake-up after it cost more
//! than the microseconds a completion or the driver's next request is usually away). The window
//! adapts as QEMU's does: a wait that ended soon after the window grows it, a long one shrinks
//! it, so that a worker whose events are far apart stops spinning. It never exceeds
//! [`MAX_WINDOW`]: a spin is bounded whatever the guest and the storage do.

use std::time::{Duration, Instant};

/// The longest the worker spins before it sleeps.
pub const MAX_WINDOW: Duration = Duration::from_micros(64);
/// The window a grow starts from when the worker did not spin at all.
const FIRST_WINDOW: Duration = Duration::from_micros(4);

/// How long to spin, and when the last spin gave up (to judge it by the wait that followed).
pub struct PollWindow {
    window: Duration,
    missed_at: Option<Instant>,
}

impl Default for PollWindow {
    fn default() -> PollWindow {
        PollWindow {
            window: FIRST_WINDOW,
            missed_at: None,
        }
    }
}

impl PollWindow {
    /// Spins until `ready` says so or the window passes; whether it did.
    pub fn watch(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        loop {
            if ready() {
                return true;
            }
            if start.elapsed() >= self.window {
                self.missed_at = Some(start);
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// The worker was woken: if it had given up spinning, the time from that spin's start to
    /// now adjusts the window.
    pub fn woke(&mut self) {
        if let Some(since) = self.missed_at.take() {
            self.adjust(since.elapsed());
        }
    }

    /// Adjusts the window to a wait of `waited` (spin and sleep) for the next event: a wait
    /// within [`MAX_WINDOW`] would have been caught by a longer spin (grow); a longer one
    /// was not worth spinning for (shrink, down to not spinning at all).
    fn adjust(&mut self, waited: Duration) {
        self.window = if waited > MAX_WINDOW {
            self.window / 2
        } else if waited > self.window {
            (self.window * 2).clamp(FIRST_WINDOW, MAX_WINDOW)
        } else {
            self.window
        };
    }

    /// The current window.
    #[cfg(test)]
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_on_near_misses_and_shrinks_to_nothing_on_long_waits() {
        let mut poll = PollWindow::default();
        for _ in 0..10 {
            poll.adjust(MAX_WINDOW);
        }
        assert_eq!(poll.window(), MAX_WINDOW, "grown to the bound, not past it");
        poll.adjust(Duration::from_micros(1));
        assert_eq!(
            poll.window(),
            MAX_WINDOW,
            "an event within the window keeps it"
        );
        for _ in 0..40 {
            poll.adjust(MAX_WINDOW * 10);
        }
        assert_eq!(poll.window(), Duration::ZERO, "long waits end the spinning");
        poll.adjust(Duration::from_micros(10));
        assert_eq!(poll.window(), FIRST_WINDOW, "a near miss starts it again");
    }

    #[test]
    fn a_watch_stops_at_the_first_ready_and_a_zero_window_looks_once() {
        let mut poll = PollWindow::default();
        let mut asked = 0;
        assert!(poll.watch(|| {
            asked += 1;
            true
        }));
        assert_eq!(asked, 1);
        poll.window = Duration::ZERO;
        assert!(!poll.watch(|| {
            asked += 1;
            false
        }));
        assert_eq!(asked, 2, "looked once, then gave up");
        poll.woke();
        assert!(poll.window() <= MAX_WINDOW);
    }
}
