//! Pinned maps across upgrades. aya reuses a map pinned by name whatever
//! its shape, so a newer object whose map grew (a bigger value, more
//! entries) would be verified against the old map and refused: the new
//! daemon could not start on a node an older one had run on. One whose
//! type changed (a hash become an array of the same sizes) would even be
//! accepted, and read by the agent as what it no longer is. Before
//! loading, each pinned map is compared with the object's definition; one
//! whose shape changed is unpinned, so the load creates it anew. Programs
//! still attached keep the old map until theirs are replaced, and the
//! agent refills the new one from its state, as at any start.

use std::path::Path;

use aya_obj::maps::PinningType;

use crate::Error;

/// A pinned map that was replaced, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    pub name: String,
    /// "key/value/entries/flags" as pinned, then as the object wants it.
    pub was: String,
    pub now: String,
}

fn shape(kind: String, key: u32, value: u32, entries: u32, flags: u32) -> String {
    format!("{kind}, key {key} B, value {value} B, {entries} entries, flags {flags:#x}")
}

/// The object's map type by aya's name for it (as `MapInfo` reports the
/// pinned one's).
fn kind(t: u32) -> String {
    aya_obj::generated::bpf_map_type::try_from(t)
        .ok()
        .and_then(|t| aya::maps::MapType::try_from(t).ok())
        .map_or_else(|| format!("type {t}"), |t| format!("{t:?}"))
}

/// Unpins every map of `obj` pinned in `pin_dir` with another shape.
pub fn replace_changed(pin_dir: &Path, obj: &[u8]) -> Result<Vec<Replaced>, Error> {
    let obj = aya_obj::Object::parse(obj)
        .map_err(|e| Error::Other(format!("parse the eBPF object: {e}")))?;
    let mut out = vec![];
    let mut names: Vec<&String> = obj.maps.keys().collect();
    names.sort();
    for name in names {
        let def = &obj.maps[name];
        if def.pinning() != PinningType::ByName {
            continue;
        }
        let pin = pin_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let now = shape(
            kind(def.map_type()),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
            def.map_flags(),
        );
        let was = match aya::maps::MapInfo::from_pin(&pin) {
            Ok(i) => {
                // Entries 0: the loader sizes the map itself (per CPU).
                let entries = match def.max_entries() {
                    0 => 0,
                    _ => i.max_entries(),
                };
                let kind = i
                    .map_type()
                    .map_or_else(|e| format!("type unknown ({e})"), |t| format!("{t:?}"));
                shape(kind, i.key_size(), i.value_size(), entries, i.map_flags())
            }
            Err(e) => format!("unreadable ({e})"),
        };
        if was != now {
            std::fs::remove_file(&pin)
                .map_err(|e| Error::io(format!("unpin {}", pin.display()), e))?;
            out.push(Replaced {
                name: name.clone(),
                was,
                now,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::overlay::{Accel, Overlay};

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// As an older daemon left them: `shoal_config` pinned with a smaller
    /// value, `shoal_ep_traffic` a per-CPU hash of the same sizes as the
    /// array it now is. The load replaces both (the first used to fail
    /// verification, the second to load and then fail to open as an
    /// array), and a second load, finding every shape right, replaces
    /// nothing.
    #[test]
    fn a_map_pinned_by_an_older_version_with_another_shape_is_replaced() {
        crate::ensure_bpffs().unwrap();
        let dir = Dir(PathBuf::from(format!(
            "/sys/fs/bpf/shoal-pins-ut-{}",
            std::process::id()
        )));
        std::fs::create_dir_all(&dir.0).unwrap();
        let pin = dir.0.join("shoal_config");
        let made = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&pin)
            .args(["type", "array", "key", "4", "value", "8", "entries", "1"])
            .args(["name", "shoal_config"])
            .status()
            .expect("bpftool (the test command installs it)");
        assert!(made.success());
        assert_eq!(aya::maps::MapInfo::from_pin(&pin).unwrap().value_size(), 8);
        let traffic = dir.0.join("shoal_ep_traffic");
        let made = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&traffic)
            .args(["type", "percpu_hash", "key", "4", "value", "32"])
            .args(["entries", "4096", "name", "shoal_ep_traffic"])
            .status()
            .unwrap();
        assert!(made.success());

        let overlay = Overlay::load(&dir.0, Accel::Tc.hooks(true)).unwrap();
        let want = std::mem::size_of::<shoal_ebpf::Config>() as u32;
        assert_eq!(
            aya::maps::MapInfo::from_pin(&pin).unwrap().value_size(),
            want
        );
        let kind = aya::maps::MapInfo::from_pin(&traffic).unwrap().map_type();
        assert_eq!(kind.unwrap(), aya::maps::MapType::PerCpuArray);
        overlay.maps().unwrap().config().unwrap();
        drop(overlay);
        assert_eq!(
            replace_changed(&dir.0, shoal_ebpf::OVERLAY_OBJ).unwrap(),
            []
        );
    }
}
