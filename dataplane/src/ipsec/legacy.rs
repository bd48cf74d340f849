//! What the first version of encrypted networks left on a node: an xfrm
//! interface that tunnel-mode SAs encrypted for, and policies bound to its
//! if_id. The current SAs would sit beside them (same SPIs, same peers),
//! so they go before the first device is made, and at cleanup.

use super::listing::{after, blocks, num, src_dst};
use super::{batch, delete_sa_line, ip, REQID};
use crate::Error;

/// The xfrm interface an earlier version used instead, and the if_id its
/// policies were bound to (`remove_legacy`).
pub const OLD_IFNAME: &str = "shoal-ipsec";
const OLD_IF_ID: u32 = 0x5e0a;

/// Removes what an earlier version (tunnel mode through an xfrm
/// interface) left: its policies, its SAs and the interface, which the
/// new ones would otherwise sit beside (same SPIs, same peers). How many
/// things it removed.
pub fn remove_legacy() -> Result<usize, Error> {
    // Without xfrm in the kernel there is nothing to remove.
    let policies = ip(None, &["xfrm", "policy", "list", "dir", "out"]).unwrap_or_default();
    let states = ip(
        None,
        &["xfrm", "state", "list", "reqid", &REQID.to_string()],
    )
    .unwrap_or_default();
    let lines = legacy_lines(&policies, &states);
    batch(None, &lines, true)?;
    let mut n = lines.len();
    if ip(None, &["link", "show", OLD_IFNAME]).is_ok() {
        ip(None, &["link", "del", OLD_IFNAME])
            .map_err(|e| Error::Other(format!("removing {OLD_IFNAME}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

/// The lines deleting an earlier version's policies (bound to its
/// interface's if_id) and tunnel-mode SAs, from `ip xfrm` listings.
pub(super) fn legacy_lines(policies: &str, states: &str) -> Vec<String> {
    let mut out: Vec<String> = blocks(policies)
        .into_iter()
        .filter(|b| is_legacy_policy(b))
        .filter_map(|b| src_dst(b[0]))
        .map(|(me, peer)| {
            format!("xfrm policy delete src {me}/32 dst {peer}/32 dir out if_id {OLD_IF_ID:#x}")
        })
        .collect();
    for b in blocks(states) {
        let ours = b.iter().any(|l| {
            after(l, "reqid").and_then(num) == Some(REQID as u64)
                && after(l, "mode") == Some("tunnel")
        });
        let spi = b.iter().find_map(|l| after(l, "spi").and_then(num));
        if let (true, Some((src, dst)), Some(spi)) = (ours, src_dst(b[0]), spi) {
            out.push(delete_sa_line(src, dst, spi as u32));
        }
    }
    out
}

pub(super) fn is_legacy_policy(b: &[&str]) -> bool {
    b.iter()
        .any(|l| after(l, "if_id").and_then(num) == Some(OLD_IF_ID as u64))
}
