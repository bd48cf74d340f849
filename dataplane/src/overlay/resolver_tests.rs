//! BPF_PROG_TEST_RUN tests of the resolver's loopback program
//! (`ebpf/c/resolver.bpf.c`, loaded by `crate::resolver`): a task's query
//! to 127.0.0.11:53 goes to the server's port, the server's answer comes
//! back from port 53, checksums stay right, and nothing else is touched.
//! (Here beside the overlay's tests for their frame builders.)

use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::Ebpf;
use shoal_ebpf::{prog, RESOLVER_OBJ, RESOLVER_PORT};

use super::lb_tests::{checksums_ok, frame, tcp, udp_ok};
use super::tests::TC_ACT_OK;

const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const TASK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn ports(f: &[u8]) -> (u16, u16) {
    let p = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    (p(34), p(36))
}

#[test]
fn port_53_of_the_resolver_is_moved_to_the_servers_port_and_back() {
    let mut ebpf = Ebpf::load(RESOLVER_OBJ).unwrap();
    let p: &mut SchedClassifier = ebpf.program_mut(prog::DNS_LO).unwrap().try_into().unwrap();
    p.load().unwrap();
    let run = |f: &[u8]| -> Vec<u8> {
        let mut out = vec![0u8; f.len() + 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(f);
        opts.data_out = Some(&mut out);
        let r = p.test_run(opts).unwrap();
        assert_eq!(r.return_value, TC_ACT_OK);
        out.truncate(r.data_size_out as usize);
        out
    };
    let lo = [0u8; 6];
    for proto in [17u8, 6] {
        let seg = |src, dst, sport, dport| match proto {
            17 => udp_ok(src, dst, sport, dport),
            _ => tcp(src, dst, sport, dport),
        };
        // The task's query: to the server's port.
        let out = run(&frame(
            TASK,
            RESOLVER,
            proto,
            &seg(TASK, RESOLVER, 40000, 53),
            lo,
        ));
        assert_eq!(ports(&out), (40000, RESOLVER_PORT), "proto {proto}");
        assert!(checksums_ok(&out), "proto {proto}");
        // The server's answer: from port 53 again.
        let answer = seg(RESOLVER, TASK, RESOLVER_PORT, 40000);
        let out = run(&frame(RESOLVER, TASK, proto, &answer, lo));
        assert_eq!(ports(&out), (53, 40000), "proto {proto}");
        assert!(checksums_ok(&out), "proto {proto}");
        // Anything else passes untouched: the task's own port 53, another
        // address's, another port of the resolver's address.
        for f in [
            frame(TASK, TASK, proto, &seg(TASK, TASK, 40000, 53), lo),
            frame(TASK, RESOLVER, proto, &seg(TASK, RESOLVER, 40000, 54), lo),
            frame(RESOLVER, TASK, proto, &seg(RESOLVER, TASK, 53, 40000), lo),
        ] {
            assert_eq!(run(&f), f, "proto {proto}");
        }
    }
}
