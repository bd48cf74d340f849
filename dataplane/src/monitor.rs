//! The datapath's event stream (`ebpf/c/include/events.h`): a switch that
//! says what the programs report (drops, traces, trace sampling) and the
//! ring buffer they report into, both pinned with the overlay's maps.

use std::path::Path;

use aya::maps::{Array, Map, MapData, RingBuf};
use shoal_ebpf::{map, Event, MonitorCfg, MON_DROPS, MON_TRACES};

use crate::Error;

/// A listener on one node's datapath events. Reporting is switched on by
/// `start` (added to what another listener asked for) and back to what it
/// was when the listener is dropped. Listeners share the one ring buffer:
/// two at once split the events between them.
pub struct Monitor {
    cfg: Array<MapData, MonitorCfg>,
    ring: Option<RingBuf<MapData>>,
    /// The switch as found, restored on drop.
    before: Option<MonitorCfg>,
}

impl Monitor {
    pub fn open(pins: &Path) -> Result<Self, Error> {
        let cfg = Array::try_from(Map::Array(crate::pinned_map(pins, map::MONITOR)?))
            .map_err(|e| Error::map("map shoal_monitor", e))?;
        let ring = RingBuf::try_from(Map::RingBuf(crate::pinned_map(pins, map::EVENTS)?))
            .map_err(|e| Error::map("map shoal_events", e))?;
        Ok(Self {
            cfg,
            ring: Some(ring),
            before: None,
        })
    }

    /// What the datapath reports from now on: `flags` of MON_DROPS and
    /// MON_TRACES, one trace in `trace_every`.
    pub fn start(&mut self, flags: u32, trace_every: u32) -> Result<(), Error> {
        let now = self.cfg.get(&0, 0).unwrap_or_default();
        let before = *self.before.get_or_insert(now);
        let cfg = MonitorCfg {
            flags: before.flags | flags,
            trace_every: match (before.trace_every, trace_every) {
                (0, t) | (t, 0) => t,
                (a, b) => a.min(b),
            },
        };
        self.cfg
            .set(0, cfg, 0)
            .map_err(|e| Error::map("write shoal_monitor", e))
    }

    /// The ring buffer to read (once).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The events waiting in `ring` now.
    pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<Event> {
        let mut out = vec![];
        while let Some(item) = ring.next() {
            if let Some(e) = Event::parse(&item) {
                out.push(e);
            }
        }
        out
    }
}

impl Drop for Monitor {
    /// Puts the monitor's bits back as found; the flow log's bit is the
    /// agent's and stays as it is now.
    fn drop(&mut self) {
        let before = self.before.unwrap_or_default();
        let now = self.cfg.get(&0, 0).unwrap_or_default();
        let mine = MON_DROPS | MON_TRACES;
        let cfg = MonitorCfg {
            flags: (now.flags & !mine) | (before.flags & mine),
            trace_every: before.trace_every,
        };
        let _ = self.cfg.set(0, cfg, 0);
    }
}

/// The datapath stamps records with `bpf_ktime_get_ns` (CLOCK_MONOTONIC);
/// this turns such stamps into wall-clock time, either side of `now`.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    mono_ns: u64,
    wall: std::time::SystemTime,
}

impl MonoClock {
    pub fn now() -> Self {
        let mono_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0);
        Self {
            mono_ns,
            wall: std::time::SystemTime::now(),
        }
    }

    pub fn wall(&self, ts_ns: u64) -> std::time::SystemTime {
        use std::time::Duration;
        if ts_ns >= self.mono_ns {
            self.wall + Duration::from_nanos(ts_ns - self.mono_ns)
        } else {
            self.wall - Duration::from_nanos(self.mono_ns - ts_ns)
        }
    }

    /// `wall` as Unix milliseconds.
    pub fn wall_ms(&self, ts_ns: u64) -> u64 {
        self.wall(ts_ns)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_before_and_after_now_map_to_their_wall_time() {
        let c = MonoClock::now();
        let at = |ns: u64| {
            c.wall(ns).duration_since(c.wall(c.mono_ns)).map_or_else(
                |e| -(e.duration().as_millis() as i64),
                |d| d.as_millis() as i64,
            )
        };
        assert_eq!(
            at(c.mono_ns + 5_000_000),
            5,
            "after now (the monitor's case)"
        );
        assert_eq!(at(c.mono_ns - 7_000_000), -7, "before now");
    }
}
