//! Reads classic pcap files (what `tcpdump -w` writes) and decodes the
//! outer headers of VXLAN frames. A dozen lines, so no crate for it.

#[derive(Debug, Clone)]
pub struct Vxlan {
    pub outer_src: [u8; 4],
    pub outer_dst: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub udp_checksum: u16,
    pub flags: u8,
    pub vni: u32,
    pub inner: Vec<u8>,
}

/// The frames of a pcap file (Ethernet link type).
pub fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    assert!(data.len() >= 24, "pcap too short");
    let le = u32::from_le_bytes(data[0..4].try_into().unwrap()) == 0xa1b2c3d4
        || u32::from_le_bytes(data[0..4].try_into().unwrap()) == 0xa1b23c4d;
    let rd = |b: &[u8]| {
        let a: [u8; 4] = b.try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = vec![];
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = rd(&data[off + 8..off + 12]) as usize;
        off += 16;
        if off + caplen > data.len() {
            break;
        }
        out.push(data[off..off + caplen].to_vec());
        off += caplen;
    }
    out
}

/// Decodes an Ethernet/IPv4/UDP/VXLAN frame.
pub fn vxlan(f: &[u8]) -> Option<Vxlan> {
    if f.len() < 14 + 20 + 8 + 8 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    let u = 14 + ihl;
    let v = u + 8;
    if f.len() < v + 8 {
        return None;
    }
    Some(Vxlan {
        outer_src: f[26..30].try_into().unwrap(),
        outer_dst: f[30..34].try_into().unwrap(),
        src_port: u16::from_be_bytes([f[u], f[u + 1]]),
        dst_port: u16::from_be_bytes([f[u + 2], f[u + 3]]),
        udp_checksum: u16::from_be_bytes([f[u + 6], f[u + 7]]),
        flags: f[v],
        vni: u32::from_be_bytes([0, f[v + 4], f[v + 5], f[v + 6]]),
        inner: f[v + 8..].to_vec(),
    })
}
