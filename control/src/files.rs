//! Files a crash must never leave half written (the daemon's state, the
//! swarm membership, the lab file, remembered gossip peers...).

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `data` to `path` whole or not at all: to a temporary file beside
/// it, renamed over it, so a crash leaves the old contents or the new.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        super::write_atomic(&path, b"old").unwrap();
        super::write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no-such-dir/state.json");
        let e = super::write_atomic(&missing, b"x").unwrap_err();
        assert!(format!("{e:#}").contains("no-such-dir"), "{e:#}");
    }
}
