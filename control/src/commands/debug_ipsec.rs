//! `shoal debug ipsec`: encrypted networks on this node as its daemon sees
//! them: whether the kernel can, the key ids in use, and per peer node its
//! SAs' key ids, packets and errors (never a key).

use std::path::Path;

use anyhow::Result;

use crate::output::{print_json, print_table, Format};
use crate::wire::IpsecView;

pub fn run(socket: &Path, format: Format) -> Result<()> {
    let client = crate::api::client::Client::new(socket);
    let v: IpsecView = super::runtime()?.block_on(client.get("/v1/debug/ipsec"))?;
    if format == Format::Json {
        return print_json(&v);
    }
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    match v.support.why_not() {
        None => println!("IPsec: ready ({})", shoal_dataplane::ipsec::ALGO),
        Some(w) => println!("IPsec: unavailable: {w}"),
    }
    println!(
        "devices {}, encrypted networks (VNI) {}, key ring {}, sending with {}",
        if v.devices.is_empty() {
            "-".to_string()
        } else {
            v.devices.join(",")
        },
        list(&v.encrypted_vnis),
        list(&v.ring),
        v.sending.map_or("-".into(), |k| k.to_string())
    );
    let opt = |o: Option<u32>| o.map_or("-".into(), |k| k.to_string());
    let rows: Vec<Vec<String>> = v
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer.to_string(),
                opt(p.out_key),
                p.out_spi.map_or("-".into(), |s| format!("{s:#010x}")),
                p.out_packets.to_string(),
                list(&p.in_keys),
                p.in_packets.to_string(),
                p.errors.to_string(),
            ]
        })
        .collect();
    println!();
    print_table(
        &[
            "PEER",
            "OUT KEY",
            "OUT SPI",
            "OUT PACKETS",
            "IN KEYS",
            "IN PACKETS",
            "ERRORS",
        ],
        &rows,
    );
    if !v.kernel_errors.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = v
            .kernel_errors
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        print_table(&["KERNEL XFRM COUNTER", "VALUE"], &rows);
    }
    Ok(())
}
