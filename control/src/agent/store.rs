//! What the agent must remember across restarts: its networks and its local
//! endpoints (the maps remember the dataplane; this remembers names, netns
//! paths and ownership). One JSON file, written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::wire::{Endpoint, Network};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("state.json"),
        }
    }

    pub fn load(&self) -> Result<State> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("corrupt {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", self.path.display())),
        }
    }

    pub fn save(&self, st: &State) -> Result<()> {
        crate::files::write_atomic(&self.path, &serde_json::to_vec_pretty(st)?)
    }
}
