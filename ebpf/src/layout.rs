//! How the Rust mirrors of the C types describe themselves, so that a test
//! (`btf_check.rs`) can compare them with the compiled object's BTF: a
//! struct's C name and each field's name, offset and size; an enum's C name
//! and each enumerator's C name and value. The macros below define a mirror
//! and its description from one list, so the two cannot drift apart.

/// One field of a `#[repr(C)]` mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A `#[repr(C)]` struct that mirrors `struct C_NAME` field for field.
pub trait CStruct: Sized {
    /// The C struct's name.
    const C_NAME: &'static str;
    /// Handed to the kernel as map keys or values (`aya::Pod`), so it must
    /// have no padding: the kernel would read uninitialised bytes.
    const POD: bool;
    /// Its fields in declaration order.
    fn fields() -> Vec<FieldLayout>;
}

/// Rust values mirroring the enumerators of `enum C_NAME`.
#[derive(Clone, Debug)]
pub struct CEnum {
    pub c_name: &'static str,
    /// Every mirrored enumerator, as (C name, value).
    pub values: Vec<(String, i64)>,
    /// The `PREFIX_MAX` enumerator that counts the others, if the C enum
    /// has one (a counter enum sizing a per-CPU array).
    pub max: Option<String>,
}

/// `CamelCase` -> `CAMEL_CASE` after `prefix`: a counter variant's name in
/// C (`DropReason::NoNeigh` is `DROP_NO_NEIGH`).
pub fn c_enumerator(prefix: &str, variant: &str) -> String {
    let mut s = String::from(prefix);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

/// Defines a `#[repr(C)]` mirror of a C struct and its [`CStruct`]
/// description. `pod` also implements `aya::Pod` (a map key or value).
macro_rules! c_struct {
    (@pod pod $name:ident) => {
        // SAFETY: a repr(C) struct of integers only; btf_check.rs proves it
        // has the C struct's layout and no padding.
        unsafe impl aya::Pod for $name {}
    };
    (
        $(#[$m:meta])*
        pub struct $name:ident = $c:literal $(, $pod:ident)? {
            $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[repr(C)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t),*
        }
        impl $crate::layout::CStruct for $name {
            const C_NAME: &'static str = $c;
            const POD: bool = c_struct!(@is_pod $($pod)?);
            fn fields() -> Vec<$crate::layout::FieldLayout> {
                vec![$($crate::layout::FieldLayout {
                    name: stringify!($f),
                    offset: std::mem::offset_of!($name, $f),
                    size: std::mem::size_of::<$t>(),
                }),*]
            }
        }
        $(c_struct!(@pod $pod $name);)?
    };
    (@is_pod pod) => { true };
    (@is_pod) => { false };
}

/// Defines a counter enum (an index into a per-CPU array of the object)
/// mirroring `enum C_NAME`, whose enumerators are `PREFIX` + the variant's
/// name in upper snake case, counted by `PREFIX` + `MAX`.
macro_rules! counters {
    (
        $(#[$m:meta])*
        $name:ident = $c:literal, $prefix:literal {
            $($var:ident = $label:literal),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u32)]
        pub enum $name { $($var),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            pub fn label(self) -> &'static str {
                match self { $($name::$var => $label),* }
            }
            /// Its C enumerators and their count (checked against the
            /// object by btf_check.rs).
            pub fn c_enum() -> $crate::layout::CEnum {
                $crate::layout::CEnum {
                    c_name: $c,
                    values: vec![$((
                        $crate::layout::c_enumerator($prefix, stringify!($var)),
                        $name::$var as i64,
                    )),*],
                    max: Some(concat!($prefix, "MAX").into()),
                }
            }
        }
    };
}

/// Defines constants that mirror the enumerators of C enums (named alike
/// after the C prefix, "" for none), and `const_enums()`, their
/// descriptions.
macro_rules! c_consts {
    (
        $(
            enum $c:literal prefix $prefix:literal {
                $($(#[$m:meta])* $k:ident : $t:ty = $v:expr),* $(,)?
            }
        )*
    ) => {
        $($($(#[$m])* pub const $k: $t = $v;)*)*

        /// The C enums the constants above mirror.
        #[cfg(test)]
        pub(crate) fn const_enums() -> Vec<$crate::layout::CEnum> {
            vec![$(
                $crate::layout::CEnum {
                    c_name: $c,
                    values: vec![$((
                        concat!($prefix, stringify!($k)).to_string(),
                        $k as i64,
                    )),*],
                    max: None,
                }
            ),*]
        }
    };
}

pub(crate) use {c_consts, c_struct, counters};

#[cfg(test)]
mod tests {
    #[test]
    fn counter_variants_take_their_c_names() {
        assert_eq!(super::c_enumerator("DROP_", "NoNeigh"), "DROP_NO_NEIGH");
        assert_eq!(super::c_enumerator("STAT_", "XdpToTc"), "STAT_XDP_TO_TC");
        assert_eq!(super::c_enumerator("DROP_", "None"), "DROP_NONE");
    }
}
