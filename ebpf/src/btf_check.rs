//! The Rust mirrors checked against the compiled object itself: its BTF
//! (the type information clang writes with `-g`) says what the C structs
//! and enums are after compilation, so a change on the C side alone (a
//! field added, moved or resized, an enumerator added or renumbered, a new
//! map) fails here, naming the struct, field or enumerator.
//!
//! The ELF section is read with `object` (already aya's) and the BTF with
//! `btfparse`; aya-obj parses BTF too but keeps its types' fields private.

use std::collections::{BTreeMap, BTreeSet};

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use object::{Object, ObjectSection};

use crate::layout::{CEnum, CStruct, FieldLayout};
use crate::*;

/// Structs in the object that no Rust code reads or writes, and why.
const C_ONLY: &[(&str, &str)] = &[
    ("__sk_buff", "the kernel's tc context"),
    ("xdp_md", "the kernel's XDP context"),
    (
        "nexthop",
        "the tc hook's FIB cache, an unpinned map userspace never opens",
    ),
    ("shoal_btf_types", "lists the mirrored types for this check"),
];

/// A Rust mirror as the checks see it.
struct Mirror {
    rust: &'static str,
    c: &'static str,
    size: usize,
    pod: bool,
    fields: Vec<FieldLayout>,
}

fn mirror<T: CStruct>() -> Mirror {
    let path = std::any::type_name::<T>();
    Mirror {
        rust: path.rsplit("::").next().unwrap_or(path),
        c: T::C_NAME,
        size: std::mem::size_of::<T>(),
        pod: T::POD,
        fields: T::fields(),
    }
}

/// Every struct mirror in types.rs (a C struct without one fails
/// `every_struct_in_the_object_has_a_mirror`).
fn mirrors() -> Vec<Mirror> {
    vec![
        mirror::<EpKey>(),
        mirror::<EpValue>(),
        mirror::<IfaceValue>(),
        mirror::<VniValue>(),
        mirror::<Config>(),
        mirror::<SvcKey>(),
        mirror::<SvcValue>(),
        mirror::<MaglevValue>(),
        mirror::<BackendKey>(),
        mirror::<CtKey>(),
        mirror::<CtValue>(),
        mirror::<LbStatValue>(),
        mirror::<EpTraffic>(),
        mirror::<MeshPortKey>(),
        mirror::<MeshPortValue>(),
        mirror::<MeshRevValue>(),
        mirror::<MonitorCfg>(),
        mirror::<Event>(),
        mirror::<Flow>(),
    ]
}

/// Every enum mirror.
fn enums() -> Vec<CEnum> {
    let mut v = vec![DropReason::c_enum(), Stat::c_enum()];
    v.extend(crate::types::const_enums());
    v
}

/// The bytes of the object's .BTF section, for btfparse.
struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buf: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| {
                btfparse::Error::new(btfparse::ErrorKind::EOF, "read past the end of .BTF")
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The overlay object's BTF.
struct Btf(TypeInformation);

/// A C struct member: name, byte offset (None for a bitfield), type.
type Member = (String, Option<u32>, u32);

impl Btf {
    fn overlay() -> Btf {
        let elf = object::File::parse(OVERLAY_OBJ).expect("the overlay object parses as ELF");
        let sec = elf
            .section_by_name(".BTF")
            .expect("the overlay object has BTF (clang -g)");
        let data = sec.data().expect(".BTF section data");
        Btf(TypeInformation::new(&Bytes(data)).expect("the .BTF section parses"))
    }

    fn types(&self) -> impl Iterator<Item = (u32, &TypeVariant)> {
        self.0.get().iter().map(|(id, t)| (*id, t))
    }

    /// Named structs: name -> (size, members).
    fn structs(&self) -> BTreeMap<String, (usize, Vec<Member>)> {
        let mut out = BTreeMap::new();
        for (_, t) in self.types() {
            if let TypeVariant::Struct(s) = t {
                let Some(name) = s.name().clone() else {
                    continue;
                };
                let members = s
                    .member_list()
                    .iter()
                    .map(|m| {
                        let off = match m.offset() {
                            Offset::ByteOffset(o) => Some(o),
                            Offset::BitOffsetAndSize(..) => None,
                        };
                        (m.name().unwrap_or_default(), off, m.tid())
                    })
                    .collect();
                out.insert(name, (*s.size(), members));
            }
        }
        out
    }

    /// Named enums: name -> enumerators (name, value).
    fn enums(&self) -> BTreeMap<String, Vec<(String, i64)>> {
        let mut out = BTreeMap::new();
        for (_, t) in self.types() {
            if let TypeVariant::Enum(e) = t {
                let Some(name) = e.name().clone() else {
                    continue;
                };
                let values = e
                    .named_value_list()
                    .iter()
                    .map(|v| {
                        let n = match v.value {
                            btfparse::Integer32Value::Signed(n) => n as i64,
                            btfparse::Integer32Value::Unsigned(n) => n as i64,
                        };
                        (v.name.clone(), n)
                    })
                    .collect();
                out.insert(name, values);
            }
        }
        out
    }

    fn size_of(&self, tid: u32) -> usize {
        self.0.size_of(tid).expect("a member's type has a size")
    }

    /// The maps in the `.maps` section: name -> its definition's member
    /// names (`type`, `key`, `value`, `pinning`, ...).
    fn maps(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for (_, t) in self.types() {
            let TypeVariant::DataSec(sec) = t else {
                continue;
            };
            if sec.name().as_deref() != Some(".maps") {
                continue;
            }
            for v in sec.variable_list() {
                let Some(TypeVariant::Var(var)) = self.0.from_id(v.var_decl_id) else {
                    continue;
                };
                let Some(TypeVariant::Struct(def)) = self.0.from_id(*var.tid()) else {
                    continue;
                };
                let members = def.member_list().iter().filter_map(|m| m.name()).collect();
                out.insert(var.name().clone().unwrap_or_default(), members);
            }
        }
        out
    }
}

/// What differs between a mirror and its C struct, one line each.
fn struct_problems(btf: &Btf, m: &Mirror) -> Vec<String> {
    let structs = btf.structs();
    let Some((c_size, members)) = structs.get(m.c) else {
        return vec![format!(
            "struct {} (mirrored by {}) is not in the object's BTF: \
             no map uses it; list it in shoal_btf_types (c/include/btf_anchor.h)",
            m.c, m.rust
        )];
    };
    let mut out = vec![];
    if *c_size != m.size {
        out.push(format!(
            "struct {}: {c_size} bytes in C, {} bytes in Rust's {}",
            m.c, m.size, m.rust
        ));
    }
    let rust: BTreeMap<&str, &FieldLayout> = m.fields.iter().map(|f| (f.name, f)).collect();
    for (name, off, tid) in members {
        let size = btf.size_of(*tid);
        let Some(off) = off else {
            out.push(format!(
                "struct {}: field `{name}` is a bitfield, which Rust cannot mirror",
                m.c
            ));
            continue;
        };
        match rust.get(name.as_str()) {
            None => out.push(format!(
                "struct {}: field `{name}` (offset {off}, {size} bytes) is missing in Rust's {}",
                m.c, m.rust
            )),
            Some(f) if (f.offset, f.size) != (*off as usize, size) => out.push(format!(
                "struct {}: field `{name}` is at offset {off} ({size} bytes) in C, \
                 at {} ({} bytes) in Rust's {}",
                m.c, f.offset, f.size, m.rust
            )),
            Some(_) => {}
        }
    }
    let c_names: BTreeSet<&str> = members.iter().map(|(n, ..)| n.as_str()).collect();
    for f in &m.fields {
        if !c_names.contains(f.name) {
            out.push(format!(
                "struct {}: Rust's {} has field `{}`, C does not",
                m.c, m.rust, f.name
            ));
        }
    }
    let used: usize = m.fields.iter().map(|f| f.size).sum();
    if m.pod && used != m.size {
        out.push(format!(
            "{} is a map key or value (aya::Pod) but has {} bytes of padding, \
             which the kernel would read uninitialised",
            m.rust,
            m.size - used
        ));
    }
    out
}

/// What differs between an enum's Rust values and its C enumerators.
fn enum_problems(btf: &Btf, e: &CEnum) -> Vec<String> {
    let enums = btf.enums();
    let Some(c) = enums.get(e.c_name) else {
        return vec![format!(
            "enum {} is not in the object's BTF: list it in shoal_btf_types (c/include/btf_anchor.h)",
            e.c_name
        )];
    };
    let c: BTreeMap<&str, i64> = c.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut out = vec![];
    for (name, v) in &e.values {
        match c.get(name.as_str()) {
            None => out.push(format!(
                "enum {}: Rust mirrors {name}, C has no such enumerator",
                e.c_name
            )),
            Some(cv) if cv != v => out.push(format!(
                "enum {}: {name} is {cv} in C, {v} in Rust",
                e.c_name
            )),
            Some(_) => {}
        }
    }
    let rust: BTreeSet<&str> = e.values.iter().map(|(n, _)| n.as_str()).collect();
    for (name, v) in &c {
        if !rust.contains(name) && Some(*name) != e.max.as_deref() {
            out.push(format!(
                "enum {}: {name} = {v} has no Rust mirror",
                e.c_name
            ));
        }
    }
    if let Some(max) = &e.max {
        match c.get(max.as_str()) {
            None => out.push(format!("enum {}: no {max} in C", e.c_name)),
            Some(&n) if n != e.values.len() as i64 => out.push(format!(
                "enum {}: {max} is {n} in C, Rust has {} values",
                e.c_name,
                e.values.len()
            )),
            Some(_) => {}
        }
    }
    out
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what} differ between C and Rust:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_struct_mirror_matches_the_compiled_object() {
    let btf = Btf::overlay();
    let problems = mirrors()
        .iter()
        .flat_map(|m| struct_problems(&btf, m))
        .collect();
    assert_none("struct layouts", problems);
}

#[test]
fn every_struct_in_the_object_has_a_mirror() {
    let btf = Btf::overlay();
    let mirrored: BTreeSet<&str> = mirrors().iter().map(|m| m.c).collect();
    let c_only: BTreeSet<&str> = C_ONLY.iter().map(|(n, _)| *n).collect();
    let problems = btf
        .structs()
        .into_keys()
        .filter(|n| !mirrored.contains(n.as_str()) && !c_only.contains(n.as_str()))
        .map(|n| {
            format!(
                "struct {n} is in the object but has no Rust mirror \
                 (add one to types.rs and to mirrors(), or list it in C_ONLY)"
            )
        })
        .collect();
    assert_none("structs", problems);
}

#[test]
fn every_enum_mirror_matches_the_compiled_object() {
    let btf = Btf::overlay();
    let problems = enums()
        .iter()
        .flat_map(|e| enum_problems(&btf, e))
        .collect();
    assert_none("enums", problems);
}

#[test]
fn the_pinned_maps_are_the_ones_rust_names() {
    let pinned: BTreeSet<String> = Btf::overlay()
        .maps()
        .into_iter()
        .filter(|(_, members)| members.contains("pinning"))
        .map(|(name, _)| name)
        .collect();
    let rust: BTreeSet<String> = map::ALL.iter().map(|s| s.to_string()).collect();
    let problems = pinned
        .symmetric_difference(&rust)
        .map(|n| {
            if rust.contains(n) {
                format!("map {n}: in map::ALL, not pinned by the object")
            } else {
                format!("map {n}: pinned by the object, missing in map::ALL")
            }
        })
        .collect();
    assert_none("pinned maps", problems);
}

/// The checks can fail: a mirror that lacks a field of its C struct, or an
/// enumerator of its C enum, is reported by name.
#[test]
fn the_checks_report_a_difference_by_name() {
    let btf = Btf::overlay();
    let mut m = mirror::<EpValue>();
    m.fields.pop();
    m.size -= 4;
    let p = struct_problems(&btf, &m);
    assert!(
        p.iter()
            .any(|l| l.contains("struct ep_value: field `slot`")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("20 bytes in C")), "{p:?}");
    let mut e = DropReason::c_enum();
    e.values.pop();
    let p = enum_problems(&btf, &e);
    assert!(
        p.iter()
            .any(|l| l.contains("DROP_CANNOT_ENCRYPT = 23 has no Rust mirror")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("DROP_MAX is 24 in C")), "{p:?}");
}
