//! IPVS over generic netlink: fwmark-keyed virtual services with NAT real
//! servers, as Docker's load-balancing namespaces use them. A handle is
//! bound to the network namespace it was opened in (IPVS state is per
//! namespace).

pub mod wire;

use std::fmt::Debug;
use std::net::Ipv4Addr;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use serde::{Deserialize, Serialize};

use crate::netns::NetNs;
use crate::Error;
use wire::{attr, cmd, dest, inet_addr, leaf, leaf_u32, nested, svc, Attr, IpvsMsg};

/// A real server of a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsDest {
    pub addr: Ipv4Addr,
    pub weight: u32,
    pub active: u32,
    pub inactive: u32,
}

/// A fwmark virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsService {
    pub fwmark: u32,
    pub sched: String,
    pub dests: Vec<IpvsDest>,
}

pub struct Ipvs {
    sock: Socket,
    family: u16,
    seq: u32,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("IPVS: {what}"), e)
}

impl Ipvs {
    /// Opens IPVS in the calling thread's namespace. Fails with a clear
    /// message where the kernel has no IP_VS.
    pub fn open() -> Result<Self, Error> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(|e| io("socket", e))?;
        sock.bind_auto().map_err(|e| io("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| io("connect", e))?;
        let mut h = Self {
            sock,
            family: 0,
            seq: 0,
        };
        let replies = h.request(
            GenlCtrl {
                cmd: GenlCtrlCmd::GetFamily,
                nlas: vec![GenlCtrlAttrs::FamilyName(wire::FAMILY.into())],
            },
            None,
            NLM_F_REQUEST,
        );
        let family = match replies {
            Ok(r) => r.into_iter().find_map(|m: GenlCtrl| {
                m.nlas.into_iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(id),
                    _ => None,
                })
            }),
            Err(_) => None,
        };
        h.family = family.ok_or_else(|| {
            Error::Other(
                "this kernel has no IPVS (generic netlink family IPVS not found; \
                 load ip_vs or use --lb ebpf)"
                    .into(),
            )
        })?;
        Ok(h)
    }

    /// Opens IPVS inside `ns` (the socket stays bound to it).
    pub fn open_in(ns: &NetNs) -> Result<Self, Error> {
        ns.run(Self::open)?
    }

    /// Sends one request and collects the replies up to the ACK or DONE.
    fn request<F>(&mut self, payload: F, family: Option<u16>, flags: u16) -> Result<Vec<F>, Error>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let mut genl = GenlMessage::from_payload(payload);
        if let Some(f) = family {
            genl.set_resolved_family_id(f);
        }
        genl.finalize();
        let mut nl = NetlinkMessage::from(genl);
        self.seq = self.seq.wrapping_add(1);
        nl.header.flags = flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| io("send", e))?;

        let mut out = vec![];
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| io("recv", e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[off..])
                    .map_err(|e| Error::Other(format!("IPVS: bad reply: {e}")))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number != self.seq {
                    off += len.max(1);
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m.payload),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(io("request refused", e.to_io())),
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
            if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }

    fn call(&mut self, cmd: u8, attrs: Vec<Attr>) -> Result<(), Error> {
        let family = self.family;
        self.request(
            IpvsMsg { cmd, attrs },
            Some(family),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    }

    fn dump(&mut self, cmd: u8, attrs: Vec<Attr>) -> Result<Vec<IpvsMsg>, Error> {
        let family = self.family;
        self.request(
            IpvsMsg { cmd, attrs },
            Some(family),
            NLM_F_REQUEST | NLM_F_DUMP,
        )
    }

    fn fwmark_key(fwmark: u32) -> Vec<Attr> {
        vec![
            Attr::U16(svc::AF, wire::AF_INET),
            Attr::U32(svc::FWMARK, fwmark),
        ]
    }

    /// A real server's identity (port 0: the packet's own port).
    fn dest_key(addr: Ipv4Addr) -> Vec<Attr> {
        vec![
            Attr::Bytes(dest::ADDR, inet_addr(addr)),
            Attr::Be16(dest::PORT, 0),
            Attr::U16(dest::ADDR_FAMILY, wire::AF_INET),
        ]
    }

    /// A fwmark virtual service (every port and protocol the mark covers).
    pub fn add_fwmark_service(&mut self, fwmark: u32, sched: &str) -> Result<(), Error> {
        let mut s = Self::fwmark_key(fwmark);
        s.extend([
            Attr::Str(svc::SCHED_NAME, sched.into()),
            // struct ip_vs_flags { flags, mask }
            Attr::Bytes(
                svc::FLAGS,
                [0u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat(),
            ),
            Attr::U32(svc::TIMEOUT, 0),
            Attr::U32(svc::NETMASK, u32::MAX),
        ]);
        self.call(cmd::NEW_SERVICE, vec![Attr::Nested(attr::SERVICE, s)])
    }

    pub fn del_fwmark_service(&mut self, fwmark: u32) -> Result<(), Error> {
        self.call(
            cmd::DEL_SERVICE,
            vec![Attr::Nested(attr::SERVICE, Self::fwmark_key(fwmark))],
        )
    }

    /// A NAT real server; port 0 keeps each packet's destination port.
    pub fn add_dest(&mut self, fwmark: u32, addr: Ipv4Addr, weight: u32) -> Result<(), Error> {
        self.dest_call(cmd::NEW_DEST, fwmark, addr, weight)
    }

    /// Changes a real server's weight. Weight 0 quiesces it: IPVS sends it
    /// no new connection and keeps forwarding the ones it has (a draining
    /// task), where deleting it would drop them at their next packet
    /// (`expire_nodest_conn`).
    pub fn set_dest_weight(
        &mut self,
        fwmark: u32,
        addr: Ipv4Addr,
        weight: u32,
    ) -> Result<(), Error> {
        self.dest_call(cmd::SET_DEST, fwmark, addr, weight)
    }

    fn dest_call(&mut self, c: u8, fwmark: u32, addr: Ipv4Addr, weight: u32) -> Result<(), Error> {
        self.call(
            c,
            vec![
                Attr::Nested(attr::SERVICE, Self::fwmark_key(fwmark)),
                Attr::Nested(attr::DEST, {
                    let mut d = Self::dest_key(addr);
                    d.extend([
                        Attr::U32(dest::FWD_METHOD, wire::FWD_MASQ),
                        Attr::U32(dest::WEIGHT, weight),
                        Attr::U32(dest::U_THRESH, 0),
                        Attr::U32(dest::L_THRESH, 0),
                    ]);
                    d
                }),
            ],
        )
    }

    pub fn del_dest(&mut self, fwmark: u32, addr: Ipv4Addr) -> Result<(), Error> {
        self.call(
            cmd::DEL_DEST,
            vec![
                Attr::Nested(attr::SERVICE, Self::fwmark_key(fwmark)),
                Attr::Nested(attr::DEST, Self::dest_key(addr)),
            ],
        )
    }

    /// Every fwmark service of this namespace with its real servers.
    pub fn services(&mut self) -> Result<Vec<IpvsService>, Error> {
        let mut out = vec![];
        for m in self.dump(cmd::GET_SERVICE, vec![])? {
            let Some(s) = nested(&m.attrs, attr::SERVICE) else {
                continue;
            };
            let Some(fwmark) = leaf_u32(s, svc::FWMARK).filter(|m| *m != 0) else {
                continue;
            };
            let sched = leaf(s, svc::SCHED_NAME)
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            let mut dests = vec![];
            for d in self.dump(
                cmd::GET_DEST,
                vec![Attr::Nested(attr::SERVICE, Self::fwmark_key(fwmark))],
            )? {
                let Some(d) = nested(&d.attrs, attr::DEST) else {
                    continue;
                };
                let Some(addr) = leaf(d, dest::ADDR).and_then(wire::parse_inet_addr) else {
                    continue;
                };
                dests.push(IpvsDest {
                    addr,
                    weight: leaf_u32(d, dest::WEIGHT).unwrap_or(0),
                    active: leaf_u32(d, dest::ACTIVE_CONNS).unwrap_or(0),
                    inactive: leaf_u32(d, dest::INACT_CONNS).unwrap_or(0),
                });
            }
            dests.sort_by_key(|d| d.addr);
            out.push(IpvsService {
                fwmark,
                sched,
                dests,
            });
        }
        out.sort_by_key(|s| s.fwmark);
        Ok(out)
    }
}
