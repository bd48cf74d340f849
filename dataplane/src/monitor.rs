//! The datapath's event stream (`ebpf/c/include/events.h`): a switch that
//! says what the programs report (drops, traces, trace sampling) and the
//! ring buffer they report into, both pinned with the overlay's maps.

use std::path::Path;

use aya::maps::{Array, Map, MapData, RingBuf};
use shoal_ebpf::{map, Event, MonitorCfg};

use crate::Error;

fn open(dir: &Path, name: &str) -> Result<MapData, Error> {
    let path = dir.join(name);
    MapData::from_pin(&path)
        .map_err(|e| Error::bpf(format!("open pinned map {}", path.display()), e))
}

/// A listener on one node's datapath events. Reporting is switched on by
/// `start` and off again when the listener is dropped (one listener at a
/// time per node: a second one's end switches the first one's off too).
pub struct Monitor {
    cfg: Array<MapData, MonitorCfg>,
    ring: Option<RingBuf<MapData>>,
}

impl Monitor {
    pub fn open(pins: &Path) -> Result<Self, Error> {
        let cfg = Array::try_from(Map::Array(open(pins, map::MONITOR)?))
            .map_err(|e| Error::bpf("map shoal_monitor", e))?;
        let ring = RingBuf::try_from(Map::RingBuf(open(pins, map::EVENTS)?))
            .map_err(|e| Error::bpf("map shoal_events", e))?;
        Ok(Self {
            cfg,
            ring: Some(ring),
        })
    }

    /// What the datapath reports from now on: `flags` of MON_DROPS and
    /// MON_TRACES, one trace in `trace_every`.
    pub fn start(&mut self, flags: u32, trace_every: u32) -> Result<(), Error> {
        self.cfg
            .set(0, MonitorCfg { flags, trace_every }, 0)
            .map_err(|e| Error::bpf("write shoal_monitor", e))
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
    fn drop(&mut self) {
        let _ = self.cfg.set(0, MonitorCfg::default(), 0);
    }
}
