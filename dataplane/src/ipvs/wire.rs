//! The IPVS generic-netlink family's messages (`include/uapi/linux/ip_vs.h`).
//!
//! Written here because no maintained crate speaks this family (`ipvs-rs` is
//! not on crates.io, `netlink-packet-ipvs` 0.0.1 is a stub); the framing,
//! attribute layout and family resolution come from `netlink-packet-core`
//! and `netlink-packet-generic`. Attributes are kept as a small tree of
//! typed leaves: the family has few of them and IPVS only needs a handful.

use netlink_packet_core::{
    DecodeError, Emitable, Nla, NlaBuffer, NlasIterator, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

pub const FAMILY: &str = "IPVS";
pub const VERSION: u8 = 1;

pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
}

/// Top-level attributes.
pub mod attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
}

/// Inside `attr::SERVICE`.
pub mod svc {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
}

/// Inside `attr::DEST`.
pub mod dest {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const ADDR_FAMILY: u16 = 11;
}

/// `IP_VS_CONN_F_MASQ`: NAT to the real server.
pub const FWD_MASQ: u32 = 0;
pub const AF_INET: u16 = libc::AF_INET as u16;

const NLA_F_NESTED: u16 = 1 << 15;

/// One attribute. Integers are host order except `Be16` (ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    U16(u16, u16),
    Be16(u16, u16),
    U32(u16, u32),
    Bytes(u16, Vec<u8>),
    Str(u16, String),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    pub fn kind_of(&self) -> u16 {
        match self {
            Attr::U16(k, _)
            | Attr::Be16(k, _)
            | Attr::U32(k, _)
            | Attr::Bytes(k, _)
            | Attr::Str(k, _)
            | Attr::Nested(k, _) => *k,
        }
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U16(..) | Attr::Be16(..) => 2,
            Attr::U32(..) => 4,
            Attr::Bytes(_, b) => b.len(),
            Attr::Str(_, s) => s.len() + 1,
            Attr::Nested(_, v) => v.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Nested(k, _) => k | NLA_F_NESTED,
            a => a.kind_of(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::U16(_, v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Attr::Be16(_, v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Attr::U32(_, v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Attr::Bytes(_, b) => buf[..b.len()].copy_from_slice(b),
            Attr::Str(_, s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            Attr::Nested(_, v) => v.as_slice().emit(buf),
        }
    }
}

/// Parses a list of attributes; `nested` says which kinds hold a list.
fn parse_attrs(buf: &[u8], nested: &[u16]) -> Result<Vec<Attr>, DecodeError> {
    let mut out = vec![];
    for nla in NlasIterator::new(buf) {
        let nla: NlaBuffer<&[u8]> = nla?;
        let kind = nla.kind() & !NLA_F_NESTED;
        let v = nla.value();
        out.push(if nested.contains(&kind) {
            // Inside a service or destination nothing else nests that we
            // read (statistics stay raw bytes).
            Attr::Nested(kind, parse_attrs(v, &[])?)
        } else {
            Attr::Bytes(kind, v.to_vec())
        });
    }
    Ok(out)
}

/// One IPVS request or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMsg {
    pub cmd: u8,
    pub attrs: Vec<Attr>,
}

impl GenlFamily for IpvsMsg {
    fn family_name() -> &'static str {
        FAMILY
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        VERSION
    }
}

impl Emitable for IpvsMsg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            cmd: header.cmd,
            attrs: parse_attrs(buf, &[attr::SERVICE, attr::DEST])?,
        })
    }
}

/// A leaf's bytes, if present.
pub fn leaf(attrs: &[Attr], kind: u16) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match a {
        Attr::Bytes(k, b) if *k == kind => Some(b.as_slice()),
        _ => None,
    })
}

pub fn leaf_u32(attrs: &[Attr], kind: u16) -> Option<u32> {
    Some(u32::from_ne_bytes(
        leaf(attrs, kind)?.get(..4)?.try_into().ok()?,
    ))
}

pub fn nested(attrs: &[Attr], kind: u16) -> Option<&[Attr]> {
    attrs.iter().find_map(|a| match a {
        Attr::Nested(k, v) if *k == kind => Some(v.as_slice()),
        _ => None,
    })
}

/// An IPv4 address as IPVS carries it (`union nf_inet_addr`, 16 bytes).
pub fn inet_addr(ip: std::net::Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..4].copy_from_slice(&ip.octets());
    b
}

pub fn parse_inet_addr(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(std::net::Ipv4Addr::from(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_service_round_trips() {
        let msg = IpvsMsg {
            cmd: cmd::NEW_DEST,
            attrs: vec![
                Attr::Nested(
                    attr::SERVICE,
                    vec![
                        Attr::U16(svc::AF, AF_INET),
                        Attr::U32(svc::FWMARK, 0x0a00_0102),
                    ],
                ),
                Attr::Nested(
                    attr::DEST,
                    vec![
                        Attr::Bytes(dest::ADDR, inet_addr("10.0.1.5".parse().unwrap())),
                        Attr::Be16(dest::PORT, 0),
                        Attr::U32(dest::FWD_METHOD, FWD_MASQ),
                    ],
                ),
            ],
        };
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // 4-byte aligned, nested flag set on the containers.
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(
            u16::from_ne_bytes([buf[2], buf[3]]),
            attr::SERVICE | NLA_F_NESTED
        );
        let back = IpvsMsg::parse_with_param(
            &buf,
            GenlHeader {
                cmd: cmd::NEW_DEST,
                version: VERSION,
            },
        )
        .unwrap();
        let s = nested(&back.attrs, attr::SERVICE).unwrap();
        assert_eq!(leaf_u32(s, svc::FWMARK), Some(0x0a00_0102));
        let d = nested(&back.attrs, attr::DEST).unwrap();
        assert_eq!(
            leaf(d, dest::ADDR).and_then(parse_inet_addr),
            Some("10.0.1.5".parse().unwrap())
        );
        assert_eq!(leaf(d, dest::PORT), Some(&[0u8, 0][..]));
    }

    #[test]
    fn truncated_reply_is_an_error() {
        // An attribute header claiming more than the buffer holds.
        let buf = [0x20u8, 0, 1, 0, 1, 2];
        assert!(IpvsMsg::parse_with_param(
            &buf,
            GenlHeader {
                cmd: cmd::GET_SERVICE,
                version: VERSION
            }
        )
        .is_err());
    }
}
