//! CNI CHECK: the attachment the daemon holds, the ADD result the runtime
//! kept, and the interface in the container's namespace must still agree.

use std::path::Path;

use rscni_plugin::types::CNIResult;
use shoal_dataplane::netlink::{format_mac, Netlink};
use shoal_dataplane::netns::NetNs;

use crate::wire::AttachView;

/// Why they disagree, if they do.
pub fn against(a: &AttachView, prev: &CNIResult, netns: &Path) -> Result<(), String> {
    let mac = a.mac.to_ascii_lowercase();
    if !prev
        .interfaces
        .iter()
        .any(|i| i.name == a.ifname && i.mac.to_ascii_lowercase() == mac)
    {
        return Err(format!(
            "prevResult has no interface {} with MAC {mac}",
            a.ifname
        ));
    }
    let want = format!("{}/{}", a.ip, a.prefix_len);
    if !prev.ips.iter().any(|ip| ip.address.to_string() == want) {
        return Err(format!("prevResult does not hold {want}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(inside(a, netns))
}

async fn inside(a: &AttachView, netns: &Path) -> Result<(), String> {
    let file = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    let ns = NetNs::from_file(&a.container_id, file);
    let nl = Netlink::connect_in(&ns).map_err(|e| e.to_string())?;
    let err = |e: shoal_dataplane::Error| e.to_string();
    if nl.link_index(&a.ifname).await.map_err(err)?.is_none() {
        return Err(format!("{} is gone from the namespace", a.ifname));
    }
    let have = format_mac(&nl.link_mac(&a.ifname).await.map_err(err)?);
    if have != a.mac.to_ascii_lowercase() {
        return Err(format!("{} has MAC {have}, not {}", a.ifname, a.mac));
    }
    if !nl.is_up(&a.ifname).await.map_err(err)? {
        return Err(format!("{} is down", a.ifname));
    }
    match nl.dev_of_addr(a.ip).await.map_err(err)? {
        Some(dev) if dev == a.ifname => Ok(()),
        Some(dev) => Err(format!("{} is on {dev}, not {}", a.ip, a.ifname)),
        None => Err(format!("{} lacks its address {}", a.ifname, a.ip)),
    }
}
