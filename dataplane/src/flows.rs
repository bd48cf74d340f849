//! The datapath's flow log (`ebpf/c/include/flows.h`): one record per new
//! service flow and per drop, in a ring buffer of its own that the agent
//! drains. On while the agent's switch bit (MON_FLOWS) is set.

use std::path::Path;

use aya::maps::{Array, Map, MapData, RingBuf};
use shoal_ebpf::{map, Flow, MonitorCfg, MON_FLOWS};

use crate::Error;

pub struct FlowRing {
    cfg: Array<MapData, MonitorCfg>,
    ring: RingBuf<MapData>,
}

impl FlowRing {
    pub fn open(pins: &Path) -> Result<Self, Error> {
        let cfg = Array::try_from(Map::Array(crate::pinned_map(pins, map::MONITOR)?))
            .map_err(|e| Error::map("map shoal_monitor", e))?;
        let ring = RingBuf::try_from(Map::RingBuf(crate::pinned_map(pins, map::FLOWS)?))
            .map_err(|e| Error::map("map shoal_flows", e))?;
        Ok(Self { cfg, ring })
    }

    /// Sets or clears the flow bit, leaving what a monitor asked for.
    /// Called again on every drain: a monitor that ends restores the switch
    /// it found, which may predate the bit.
    pub fn switch(&mut self, on: bool) -> Result<(), Error> {
        let mut cfg = self.cfg.get(&0, 0).unwrap_or_default();
        if (cfg.flags & MON_FLOWS != 0) == on {
            return Ok(());
        }
        cfg.flags = if on {
            cfg.flags | MON_FLOWS
        } else {
            cfg.flags & !MON_FLOWS
        };
        self.cfg
            .set(0, cfg, 0)
            .map_err(|e| Error::map("write shoal_monitor", e))
    }

    /// The records waiting now.
    pub fn drain(&mut self) -> Vec<Flow> {
        let mut out = vec![];
        while let Some(item) = self.ring.next() {
            if let Some(f) = Flow::parse(&item) {
                out.push(f);
            }
        }
        out
    }
}
