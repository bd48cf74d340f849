//! BPF_PROG_TEST_RUN tests of the routing mesh's TCP MSS clamp
//! (`ebpf/c/include/tcp_mss.h`): a client's SYN whose flow gets
//! encapsulated has its MSS lowered to the underlay's room, on both hooks,
//! which share one walk of the options; what it must leave alone.

use super::lb_tests::{checksums_ok, l4_check};
use super::mesh_tests::{setup, CLIENT, CLIENT_MAC, VIP};
use super::tests::*;
use super::Hook;

/// The mesh's clamp in `setup` (its `mesh_mss`).
const CLAMP: u16 = 1410;

/// A client's TCP segment to the published port 8080 with TCP `flags`,
/// `opts` (a multiple of 4 bytes) and `payload`.
fn segment(env: &Env, sport: u16, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&8080u16.to_be_bytes());
    t[12] = ((20 + opts.len() as u8) / 4) << 4;
    t[13] = flags;
    t.extend_from_slice(opts);
    t.extend_from_slice(payload);
    let c = l4_check(CLIENT, LOCAL_VTEP, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(env.ul_mac, CLIENT_MAC, 0x0800);
    f.extend(ipv4(CLIENT, LOCAL_VTEP, 6, 0, &[], &t));
    f
}

/// Runs a segment through the underlay program; the TCP header (and what
/// follows) as it leaves, encapsulated or not, checksums checked.
fn tcp_out(env: &mut Env, h: Hook, f: &[u8], encapsulated: bool) -> Vec<u8> {
    let (rc, out) = run(env, h, true, env.ul_ifindex, f);
    assert_eq!(rc, verdict_redirect(h), "{h:?}");
    let inner = if encapsulated { &out[50..] } else { &out[..] };
    assert!(checksums_ok(inner), "{h:?} {inner:02x?}");
    inner[34..].to_vec()
}

#[test]
fn a_syn_that_gets_encapsulated_has_its_mss_clamped() {
    with_env(|env| {
        let (mut lb, _mesh) = setup(env, &[EP_R]);
        for (i, h) in HOOKS.into_iter().enumerate() {
            lb.set_service(VNI, VIP, &[EP_R], 251).unwrap();
            let sport = 40010 + 10 * i as u16;
            // MSS 1460, NOP, NOP, SACK permitted.
            let opts = [2, 4, 0x05, 0xb4, 1, 1, 4, 2];
            let t = tcp_out(env, h, &segment(env, sport, 0x02, &opts, &[]), true);
            let mss = u16::from_be_bytes([t[22], t[23]]);
            assert_eq!(mss, CLAMP, "{h:?}: clamped to the underlay's room");
            // A local backend needs no clamp.
            lb.set_service(VNI, VIP, &[EP_B], 251).unwrap();
            let t = tcp_out(env, h, &segment(env, sport + 1, 0x02, &opts, &[]), false);
            assert_eq!(u16::from_be_bytes([t[22], t[23]]), 1460, "{h:?}");
        }
    });
}

/// An MSS case: a segment's TCP flags, options and payload, and the index
/// of the MSS value in the options if it must be clamped.
struct Case {
    what: &'static str,
    flags: u8,
    opts: Vec<u8>,
    payload: Vec<u8>,
    clamp_at: Option<usize>,
}

/// Where the option walk finds the MSS, and where it must not touch it.
#[test]
fn the_mss_walk_finds_the_option_anywhere_and_leaves_the_rest_alone() {
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    let case = |what, flags, opts: &[u8], payload: &[u8], clamp_at| Case {
        what,
        flags,
        opts: opts.to_vec(),
        payload: payload.to_vec(),
        clamp_at,
    };
    let mss = [2, 4, 0x05, 0xb4];
    // NOP, NOP, a timestamp, then the MSS.
    let behind_ts = [&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0][..], &mss].concat();
    let cases = [
        case(
            "behind NOPs and a timestamp",
            SYN,
            &behind_ts,
            &[],
            Some(14),
        ),
        case("already small enough", SYN, &[2, 4, 0x04, 0xb0], &[], None),
        case("in a SYN-ACK", SYN_ACK, &mss, &[], None),
        case(
            "after the end of options",
            SYN,
            &[&[0, 1, 1, 1][..], &mss].concat(),
            &[],
            None,
        ),
        case(
            "after a bad length",
            SYN,
            &[&[3, 1, 0, 0][..], &mss].concat(),
            &[],
            None,
        ),
        // Its value would lie past the header: payload, not an option.
        case(
            "cut by the header's end",
            SYN,
            &[1, 1, 1, 1, 1, 1, 2, 4],
            &[0x05, 0xb4],
            None,
        ),
    ];
    with_env(move |env| {
        let (_lb, _mesh) = setup(env, &[EP_R]);
        for (i, h) in HOOKS.into_iter().enumerate() {
            for (j, c) in cases.iter().enumerate() {
                let sport = 41000 + 100 * i as u16 + j as u16;
                let f = segment(env, sport, c.flags, &c.opts, &c.payload);
                let t = tcp_out(env, h, &f, true);
                let mut want = [&c.opts[..], &c.payload].concat();
                if let Some(at) = c.clamp_at {
                    want[at..at + 2].copy_from_slice(&CLAMP.to_be_bytes());
                }
                assert_eq!(&t[20..], &want[..], "{h:?}: MSS {}", c.what);
            }
        }
    });
}
