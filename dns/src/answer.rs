//! What to do with one query, as a pure function of its bytes and the
//! records: answer it from the cluster's names, refuse it, or forward it.
//!
//! - A cluster name answers A (and ANY) with its addresses, shuffled for
//!   every answer, with the configured short TTL; any other type is NODATA
//!   (NOERROR, no answer), never NXDOMAIN and never forwarded.
//! - PTR of a task or VIP answers with its name; other PTRs are forwarded.
//! - Matching ignores case; the question goes back as the client wrote it.
//! - Unparsable queries get FORMERR (if their header can be read), other
//!   opcodes NOTIMP, other classes REFUSED, several questions FORMERR.
//! - Over UDP an answer larger than the client's size (512, or its EDNS0
//!   size) is sent empty with TC set, so the client retries over TCP.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use crate::stats::Counters;
use crate::Records;

/// The UDP payload size we announce with EDNS0 (the DNS flag day value).
pub(crate) const OUR_EDNS_SIZE: u16 = 1232;

pub(crate) enum Verdict {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not a cluster name: relay the query to an upstream.
    Forward,
    /// Nothing to answer (too short to carry an id, or a response).
    Drop,
}

pub(crate) struct Ctx<'a> {
    pub records: &'a dyn Records,
    pub client: &'a str,
    pub ttl: u32,
    pub counters: &'a Counters,
}

/// A header-only reply for a query that cannot be parsed: its id, opcode
/// and RD bit, QR and RA set, `rcode`.
pub(crate) fn header_only(raw: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0] = raw[0];
    h[1] = raw[1];
    h[2] = 0x80 | (raw[2] & 0x79);
    h[3] = 0x80 | (u16::from(rcode) as u8 & 0x0f);
    h
}

/// The client's UDP size: 512, or its EDNS0 size (never below 512).
pub(crate) fn udp_limit(req: &Message) -> usize {
    req.edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload().max(512)))
}

fn reply(req: &Message, rcode: ResponseCode, answers: Vec<Record>, authoritative: bool) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = authoritative;
    m.metadata.response_code = rcode;
    m.add_queries(req.queries.iter().cloned());
    m.add_answers(answers);
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(OUR_EDNS_SIZE);
        m.set_edns(e);
    }
    m
}

/// Encodes `m`; over the limit, sends it empty with TC.
pub(crate) fn encode(mut m: Message, limit: usize, counters: &Counters) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    Counters::bump(&counters.truncated);
    m.answers.clear();
    m.authorities.clear();
    m.additionals.clear();
    m.metadata.truncation = true;
    m.to_vec().ok()
}

/// `d.c.b.a.in-addr.arpa` -> a.b.c.d.
fn ptr_addr(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// Decides about one query. `limit`: the largest reply the transport
/// takes (the client's UDP size, or 65535 over TCP).
pub(crate) fn decide(ctx: &Ctx, raw: &[u8], tcp: bool) -> Verdict {
    if raw.len() < 12 {
        Counters::bump(&ctx.counters.dropped);
        return Verdict::Drop;
    }
    if raw[2] & 0x80 != 0 {
        // A response sent to us: never answer one (no reflection loops).
        Counters::bump(&ctx.counters.dropped);
        return Verdict::Drop;
    }
    let req = match Message::from_vec(raw) {
        Ok(m) => m,
        Err(_) => {
            Counters::bump(&ctx.counters.formerr);
            return Verdict::Reply(header_only(raw, ResponseCode::FormErr));
        }
    };
    let limit = if tcp { 65535 } else { udp_limit(&req) };
    let send = |m: Message| match encode(m, limit, ctx.counters) {
        Some(b) => Verdict::Reply(b),
        None => Verdict::Reply(header_only(raw, ResponseCode::ServFail)),
    };
    if req.metadata.message_type != MessageType::Query {
        Counters::bump(&ctx.counters.dropped);
        return Verdict::Drop;
    }
    if req.metadata.op_code != OpCode::Query {
        Counters::bump(&ctx.counters.notimp);
        return send(reply(&req, ResponseCode::NotImp, vec![], false));
    }
    let [q] = req.queries.as_slice() else {
        Counters::bump(&ctx.counters.formerr);
        return send(reply(&req, ResponseCode::FormErr, vec![], false));
    };
    if q.query_class() != DNSClass::IN {
        Counters::bump(&ctx.counters.refused_class);
        return send(reply(&req, ResponseCode::Refused, vec![], false));
    }
    match local(ctx, q) {
        Some(answers) => {
            if answers.is_empty() {
                Counters::bump(&ctx.counters.nodata);
            } else {
                Counters::bump(&ctx.counters.local_answers);
            }
            send(reply(&req, ResponseCode::NoError, answers, true))
        }
        None => Verdict::Forward,
    }
}

/// The cluster's answer to `q`: `Some(records)` (empty: NODATA) for a
/// cluster name, `None` for anything else.
fn local(ctx: &Ctx, q: &Query) -> Option<Vec<Record>> {
    let name = q.name().to_ascii();
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    if key.is_empty() {
        return None;
    }
    let owner: Name = q.name().clone();
    if let Some(ip) = ptr_addr(&key) {
        let target = ctx.records.name_of(ctx.client, ip)?;
        if q.query_type() != RecordType::PTR {
            return Some(vec![]);
        }
        let target = Name::from_ascii(format!("{target}.")).ok()?;
        return Some(vec![Record::from_rdata(
            owner,
            ctx.ttl,
            RData::PTR(PTR(target)),
        )]);
    }
    let mut addrs = ctx.records.addrs(ctx.client, &key)?;
    if !matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        return Some(vec![]);
    }
    addrs.shuffle(&mut rand::rng());
    Some(
        addrs
            .into_iter()
            .map(|ip| Record::from_rdata(owner.clone(), ctx.ttl, RData::A(A(ip))))
            .collect(),
    )
}

/// A SERVFAIL (or REFUSED) for a query that was parsed before.
pub(crate) fn failure(raw: &[u8], rcode: ResponseCode) -> Vec<u8> {
    match Message::from_vec(raw) {
        Ok(req) => reply(&req, rcode, vec![], false)
            .to_vec()
            .unwrap_or_else(|_| header_only(raw, rcode)),
        Err(_) => header_only(raw, rcode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake(HashMap<(&'static str, &'static str), Vec<Ipv4Addr>>);

    impl Records for Fake {
        fn addrs(&self, client: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.0
                .iter()
                .find(|((c, n), _)| *c == client && *n == name)
                .map(|(_, v)| v.clone())
        }
        fn name_of(&self, client: &str, ip: Ipv4Addr) -> Option<String> {
            (client == "t1" && ip == Ipv4Addr::new(10, 0, 0, 5)).then(|| "web.1.abc.appnet".into())
        }
    }

    fn fake() -> Fake {
        let many: Vec<Ipv4Addr> = (1..=60).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
        Fake(HashMap::from([
            (("t1", "web"), vec![Ipv4Addr::new(10, 0, 0, 2)]),
            (
                ("t1", "tasks.web"),
                vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)],
            ),
            (("t1", "big"), many),
        ]))
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(raw: &[u8], client: &str, tcp: bool) -> Option<Message> {
        let f = fake();
        let counters = Counters::default();
        let ctx = Ctx {
            records: &f,
            client,
            ttl: 5,
            counters: &counters,
        };
        match decide(&ctx, raw, tcp) {
            Verdict::Reply(b) => Some(Message::from_vec(&b).unwrap()),
            Verdict::Forward => None,
            Verdict::Drop => panic!("dropped"),
        }
    }

    #[test]
    fn cluster_names_answer_with_the_askers_case_and_a_short_ttl() {
        let r = ask(&query("WeB.", RecordType::A, None), "t1", false).unwrap();
        assert_eq!(r.metadata.id, 4242);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && r.metadata.recursion_desired);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].ttl, 5);
        assert_eq!(r.queries[0].name().to_ascii(), "WeB.");
        assert_eq!(r.answers[0].name.to_ascii(), "WeB.");
        let r = ask(&query("tasks.web.", RecordType::A, None), "t1", false).unwrap();
        assert_eq!(r.answers.len(), 2);
    }

    #[test]
    fn other_types_are_nodata_and_strangers_are_forwarded() {
        let r = ask(&query("web.", RecordType::AAAA, None), "t1", false).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        // Not on t2's networks: forwarded, as any unknown name.
        assert!(ask(&query("web.", RecordType::A, None), "t2", false).is_none());
        assert!(ask(&query("example.org.", RecordType::A, None), "t1", false).is_none());
    }

    #[test]
    fn ptr_of_tasks_and_vips_else_forwarded() {
        let r = ask(
            &query("5.0.0.10.in-addr.arpa.", RecordType::PTR, None),
            "t1",
            false,
        )
        .unwrap();
        match &r.answers[0].data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.1.abc.appnet."),
            other => panic!("{other:?}"),
        }
        assert!(ask(
            &query("8.8.8.8.in-addr.arpa.", RecordType::PTR, None),
            "t1",
            false
        )
        .is_none());
    }

    #[test]
    fn large_answers_truncate_over_udp_and_fit_over_tcp_or_edns() {
        let r = ask(&query("big.", RecordType::A, None), "t1", false).unwrap();
        assert!(r.metadata.truncation && r.answers.is_empty());
        let r = ask(&query("big.", RecordType::A, None), "t1", true).unwrap();
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        let r = ask(&query("big.", RecordType::A, Some(4096)), "t1", false).unwrap();
        assert_eq!(r.answers.len(), 60);
        assert!(r.edns.is_some());
    }

    #[test]
    fn malformed_queries_get_formerr_notimp_refused_or_nothing() {
        // Too short for a header: dropped.
        let f = fake();
        let counters = Counters::default();
        let ctx = Ctx {
            records: &f,
            client: "t1",
            ttl: 5,
            counters: &counters,
        };
        assert!(matches!(decide(&ctx, &[1, 2, 3], false), Verdict::Drop));
        // A compression pointer loop in the question.
        let mut raw = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        raw.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let r = ask(&raw, "t1", false).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 0x1234);
        // A count that promises more than is there.
        let mut raw = query("web.", RecordType::A, None);
        raw[5] = 9;
        assert_eq!(
            ask(&raw, "t1", false).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
        // No question.
        let mut m = Message::query();
        m.metadata.id = 7;
        let r = ask(&m.to_vec().unwrap(), "t1", false).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // Another opcode.
        let mut raw = query("web.", RecordType::A, None);
        raw[2] |= 2 << 3; // STATUS
        assert_eq!(
            ask(&raw, "t1", false).unwrap().metadata.response_code,
            ResponseCode::NotImp
        );
        // Class CH.
        let mut raw = query("web.", RecordType::A, None);
        let n = raw.len();
        raw[n - 1] = 3;
        assert_eq!(
            ask(&raw, "t1", false).unwrap().metadata.response_code,
            ResponseCode::Refused
        );
        // A response: never answered.
        let mut raw = query("web.", RecordType::A, None);
        raw[2] |= 0x80;
        assert!(matches!(decide(&ctx, &raw, false), Verdict::Drop));
        let s = counters.snapshot();
        assert_eq!((s.dropped, s.formerr), (2, 0));
    }
}
