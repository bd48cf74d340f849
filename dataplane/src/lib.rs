//! Everything that programs the kernel for Shoal: named network namespaces,
//! links/addresses/routes/neighbours (rtnetlink), and the eBPF overlay
//! (aya). No cluster logic lives here.

pub mod flows;
pub mod ipsec;
pub mod ipvs;
pub mod lb;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod resolver;

pub use shoal_ebpf as ebpf;

/// Errors from programming the kernel. Messages name the object and the
/// operation, so a CLI can print them as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    /// Nothing is pinned there: no daemon has attached a dataplane with
    /// this pin directory (callers say so in their own words).
    #[error("nothing pinned at {0}")]
    NotPinned(std::path::PathBuf),
    /// A map could not be opened, read or written.
    #[error("eBPF map {0}: {1}")]
    Map(String, #[source] aya::maps::MapError),
    /// A program could not be loaded, attached or pinned (the verifier's
    /// log, when it refused one, is in the text).
    #[error("eBPF program {0}: {1}")]
    Program(String, String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(what: String, e: std::io::Error) -> Self {
        Error::Io(what, e)
    }
    pub(crate) fn sys(what: &'static str, e: nix::Error) -> Self {
        Error::Sys(what, e)
    }
    pub(crate) fn netlink(what: String, e: rtnetlink::Error) -> Self {
        Error::Netlink(what, e)
    }
    pub(crate) fn map(what: impl std::fmt::Display, e: aya::maps::MapError) -> Self {
        Error::Map(what.to_string(), e)
    }
    pub(crate) fn program(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Error::Program(what.to_string(), e.to_string())
    }
}

/// The map pinned as `name` in `dir`, or `NotPinned` when there is none.
pub(crate) fn pinned_map(dir: &std::path::Path, name: &str) -> Result<aya::maps::MapData, Error> {
    let path = dir.join(name);
    aya::maps::MapData::from_pin(&path).map_err(|e| {
        if path.exists() {
            Error::map(format!("open pinned {}", path.display()), e)
        } else {
            Error::NotPinned(path)
        }
    })
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there yet.
pub fn ensure_bpffs() -> Result<(), Error> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf").map_err(|e| Error::io("mkdir /sys/fs/bpf".into(), e))?;
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount bpffs", e))
}
