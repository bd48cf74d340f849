//! Reading back what the kernel holds: `ip xfrm state` and `ip xfrm
//! policy` listings (never a key), as `ip -s` prints them.

use std::net::Ipv4Addr;

use super::legacy::is_legacy_policy;
use super::{SaStat, REQID};

/// A number as `ip -s` prints it: `0x00001001(4097)`, `7(0x00000007)`.
pub(super) fn num(tok: &str) -> Option<u64> {
    let t = tok.split('(').next()?;
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Blocks of `ip xfrm` output, each starting at a `src A dst B` line.
pub(super) fn blocks(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = vec![];
    for l in text.lines() {
        if l.starts_with("src ") {
            out.push(vec![l]);
        } else if let Some(b) = out.last_mut() {
            b.push(l.trim());
        }
    }
    out
}

pub(super) fn src_dst(head: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let t: Vec<&str> = head.split_whitespace().collect();
    let addr = |s: &str| s.split('/').next()?.parse::<Ipv4Addr>().ok();
    match t.as_slice() {
        ["src", s, "dst", d, ..] => Some((addr(s)?, addr(d)?)),
        _ => None,
    }
}

pub(super) fn after<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let mut it = line.split_whitespace();
    it.by_ref().find(|t| *t == word)?;
    it.next()
}

pub fn parse_states(text: &str) -> Vec<SaStat> {
    let mut out = vec![];
    for b in blocks(text) {
        let Some((src, dst)) = src_dst(b[0]) else {
            continue;
        };
        let mut s = SaStat {
            src,
            dst,
            spi: 0,
            outbound: false,
            packets: 0,
            bytes: 0,
            errors: 0,
        };
        // Only inbound SAs mark what they decrypt.
        let mut inbound = false;
        let mut next_is = "";
        for l in &b[1..] {
            match next_is {
                "current" => {
                    // `N(bytes), M(packets)`
                    let mut it = l.split(',').map(str::trim);
                    s.bytes = it.next().and_then(num).unwrap_or(0);
                    s.packets = it.next().and_then(num).unwrap_or(0);
                }
                "stats" => {
                    s.errors = ["replay", "failed"]
                        .iter()
                        .filter_map(|w| after(l, w).and_then(num))
                        .sum();
                }
                _ => {}
            }
            next_is = match *l {
                "lifetime current:" => "current",
                "stats:" => "stats",
                _ => "",
            };
            if let Some(spi) = after(l, "spi").and_then(num) {
                s.spi = spi as u32;
            }
            if l.starts_with("output-mark") {
                inbound = true;
            }
        }
        s.outbound = !inbound;
        out.push(s);
    }
    out
}

pub fn parse_policies(text: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    blocks(text)
        .into_iter()
        .filter(|b| {
            b.iter()
                .any(|l| after(l, "reqid").and_then(num) == Some(REQID as u64))
                && !is_legacy_policy(b)
        })
        .filter_map(|b| src_dst(b[0]))
        .collect()
}
