//! Unit tests of the SA, policy and device lines and of reading back the
//! kernel's listings.

use super::device::{parse_devices, parse_fdb};
use super::legacy::legacy_lines;
use super::*;

const STATES: &str = "src 198.18.0.1 dst 198.18.0.2
\tproto esp spi 0x01000001(16777217) reqid 24074(0x00005e0a) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\taead rfc4106(gcm(aes)) 0x00112233 (288 bits) 128
\tanti-replay context: seq 0x0, oseq 0x2a, bitmap 0x00000000
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  5040(bytes), 42(packets)
\t  add 2026-12-05 10:00:00 use 2026-12-05 10:00:01
\tstats:
\t  replay-window 0 replay 0 failed 0
src 198.18.0.2 dst 198.18.0.1
\tproto esp spi 0x01000002(16777218) reqid 24074(0x00005e0a) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\toutput-mark 0xe00/0xf00
\taead rfc4106(gcm(aes)) 0x00112233 (288 bits) 128
\tlifetime current:
\t  120(bytes), 1(packets)
\tstats:
\t  replay-window 0 replay 2 failed 3
";

#[test]
fn states_parse_without_their_keys() {
    let s = parse_states(STATES);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[0],
        SaStat {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            spi: 0x0100_0001,
            outbound: true,
            packets: 42,
            bytes: 5040,
            errors: 0,
        }
    );
    assert!(!s[1].outbound);
    assert_eq!((s[1].packets, s[1].errors), (1, 5));
    assert!(parse_states("").is_empty());
}

#[test]
fn only_policies_with_shoal_s_reqid_are_shoal_s() {
    let text = "src 198.18.0.1/32 dst 198.18.0.2/32 proto udp sport 4790 dport 4790 \n\tdir out priority 0 \n\ttmpl src 198.18.0.1 dst 198.18.0.2\n\t\tproto esp reqid 24074 mode transport\nsrc 10.1.0.0/16 dst 10.2.0.0/16 \n\tdir out priority 0 \n\ttmpl src 1.1.1.1 dst 2.2.2.2\n\t\tproto esp reqid 7 mode tunnel\n";
    assert_eq!(
        parse_policies(text),
        vec![(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))]
    );
}

#[test]
fn devices_and_their_peers_are_read_back() {
    assert_eq!(device(0x100a), "shoal-x00100a");
    let links = "7: shoal-x00100a: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue\n8: vxlan0@eth0: <BROADCAST> mtu 1450\n9: shoal-xzz: <BROADCAST> mtu 1450\n";
    assert_eq!(
        parse_devices(links),
        vec![(0x100a, "shoal-x00100a".to_string())]
    );
    assert_eq!(
        add_fdb_line("shoal-x00100a", Ipv4Addr::new(198, 18, 0, 2)),
        "fdb replace 02:5e:c6:12:00:02 dev shoal-x00100a dst 198.18.0.2 self permanent"
    );
    let fdb = "02:5e:c6:12:00:02 dst 198.18.0.2 self permanent\n02:5e:c6:12:00:03 dst 198.18.0.3 self permanent\n33:33:00:00:00:01 self permanent\n";
    assert_eq!(
        parse_fdb(fdb),
        vec![Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)]
    );
}

#[test]
fn an_earlier_version_s_tunnel_mode_sas_and_interface_policies_are_found() {
    let policies = "src 198.18.0.1/32 dst 198.18.0.2/32 \n\tdir out priority 0 \n\tif_id 0x5e0a\n\ttmpl src 198.18.0.1 dst 198.18.0.2\n\t\tproto esp reqid 24074 mode tunnel\nsrc 198.18.0.1/32 dst 198.18.0.3/32 proto udp sport 4790 dport 4790 \n\tdir out priority 0 \n\ttmpl src 198.18.0.1 dst 198.18.0.3\n\t\tproto esp reqid 24074 mode transport\n";
    let tunnel = STATES.replacen("mode transport", "mode tunnel", 1);
    assert_eq!(
        legacy_lines(policies, &tunnel),
        vec![
            "xfrm policy delete src 198.18.0.1/32 dst 198.18.0.2/32 dir out if_id 0x5e0a"
                .to_string(),
            "xfrm state delete src 198.18.0.1 dst 198.18.0.2 proto esp spi 0x1000001".to_string(),
        ]
    );
    // The current version's are not, and are the only ones listed.
    assert!(legacy_lines("", STATES).is_empty());
    assert_eq!(
        parse_policies(policies),
        vec![(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 3))]
    );
}

#[test]
fn sa_lines_are_transport_mode_inbound_ones_mark_and_debug_hides_the_key() {
    let mut sa = Sa {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 18, 0, 2),
        spi: 0x0100_0001,
        key: [0xab; KEY_LEN],
        outbound: true,
    };
    let l = sa.add_line();
    assert!(l.contains("spi 0x1000001 reqid 24074 mode transport aead rfc4106(gcm(aes)) 0xabab"));
    assert!(l.ends_with(" 128"), "{l}");
    assert_eq!(
        add_policy_line(sa.src, sa.dst),
        "xfrm policy add src 198.18.0.1/32 dst 198.18.0.2/32 proto udp sport 4790 dport 4790 dir out tmpl src 198.18.0.1 dst 198.18.0.2 proto esp reqid 24074 mode transport"
    );
    sa.outbound = false;
    assert!(sa.add_line().ends_with("128 output-mark 0xe00 mask 0xf00"));
    assert!(!format!("{sa:?}").contains("abab"));
}
