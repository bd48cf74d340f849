//! Everything that programs the kernel for Shoal: named network namespaces,
//! links/addresses/routes/neighbours (rtnetlink), and the eBPF overlay
//! (aya). No cluster logic lives here.

pub mod flows;
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
    #[error("eBPF: {0}")]
    Bpf(String),
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
    pub(crate) fn bpf(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Error::Bpf(format!("{what}: {e}"))
    }
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
