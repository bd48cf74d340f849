//! Whether this node itself just stalled. A daemon that did not run for a
//! couple of seconds (a starved or paused VM, a loaded host) wakes to
//! find its probes unanswered in time, and its failure detector declares
//! peers down: all names and backends would vanish until the next gossip
//! rounds bring them back (a client got "connection refused" from a VIP
//! that had lost every backend for 0.6 s that way, under emulation). The
//! silence was ours, not theirs, so for a grace period after a stall the
//! peers declared down keep their entries.

use std::time::{Duration, Instant};

/// How long after a stall convictions are not trusted: the failure
/// detector has heard from every live peer again well before.
pub const GRACE: Duration = Duration::from_secs(5);

/// Ticks of the gossip interval, and the last time one came far too late.
#[derive(Debug)]
pub struct StallClock {
    interval: Duration,
    last_tick: Instant,
    stalled_at: Option<Instant>,
}

impl StallClock {
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            last_tick: now,
            stalled_at: None,
        }
    }

    /// A gap this long between ticks is a stall (the detector convicts
    /// after about 2 s of silence at the default 200 ms interval).
    fn limit(&self) -> Duration {
        self.interval * 5
    }

    /// A tick at `now`; returns the gap if it was a stall.
    pub fn tick(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        (gap > self.limit()).then(|| {
            self.stalled_at = Some(now);
            gap
        })
    }

    /// Stalled now (the tick is overdue) or within `GRACE`.
    pub fn recently(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_tick) > self.limit()
            || self
                .stalled_at
                .is_some_and(|t| now.saturating_duration_since(t) < GRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tick_is_a_stall_for_the_grace_period_and_an_overdue_one_already() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = StallClock::new(ms(200), t0);
        assert_eq!(c.tick(t0 + ms(210)), None);
        assert!(!c.recently(t0 + ms(400)));
        // Overdue: the tick has not come for 2 s.
        assert!(c.recently(t0 + ms(2300)));
        assert_eq!(c.tick(t0 + ms(2310)), Some(ms(2100)));
        assert!(c.recently(t0 + ms(2400)));
        // Ticks on time from here: the grace runs out 5 s after the stall.
        for t in (2500..=7400).step_by(200) {
            assert_eq!(c.tick(t0 + ms(t)), None);
            assert_eq!(c.recently(t0 + ms(t)), t < 7310, "{t}");
        }
    }
}
