//! Named network namespaces, compatible with `ip netns` (bind mounts under
//! /run/netns), and running code inside one.
//!
//! Namespaces belong to a thread, not a process, so "run inside" means: a
//! short-lived thread that `setns`es and does the work. Sockets opened there
//! (netlink, UDP, ...) stay bound to that namespace afterwards.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::Error;

pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Makes /run/netns a shared mount of itself, exactly as `ip netns add`
/// does, so namespaces created by Shoal and by iproute2 mix without
/// leaving mounts behind that cannot be removed.
fn ensure_run_dir() -> Result<(), Error> {
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| Error::io("create /run/netns".into(), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .is_ok()
    {
        return Ok(());
    }
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("bind-mount /run/netns", e))?;
    mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make /run/netns shared", e))
}

/// A named network namespace (a file under /run/netns).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    pub fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(name)
    }

    pub fn exists(name: &str) -> bool {
        Self::path_of(name).exists()
    }

    /// Opens an existing named namespace.
    pub fn open(name: &str) -> Result<Self, Error> {
        let file = File::open(Self::path_of(name))
            .map_err(|e| Error::io(format!("open netns {name}"), e))?;
        Ok(Self {
            name: name.to_string(),
            file,
        })
    }

    /// Wraps an already opened namespace file (any path: /run/netns/X,
    /// /proc/PID/ns/net, ...).
    pub fn from_file(name: &str, file: File) -> Self {
        Self {
            name: name.to_string(),
            file,
        }
    }

    /// Opens the namespace or creates it, like `ip netns add`.
    pub fn open_or_create(name: &str) -> Result<Self, Error> {
        if Self::exists(name) {
            if let Ok(ns) = Self::open(name) {
                return Ok(ns);
            }
        }
        Self::create(name)
    }

    /// Creates a new namespace and pins it at /run/netns/NAME.
    pub fn create(name: &str) -> Result<Self, Error> {
        ensure_run_dir()?;
        let path = Self::path_of(name);
        File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let target = path.clone();
        let res = std::thread::spawn(move || -> Result<(), Error> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("unshare(CLONE_NEWNET)", e))?;
            // SAFETY-free: gettid is always safe; the thread's own ns file.
            let tid = nix::unistd::gettid();
            let src = format!("/proc/self/task/{tid}/ns/net");
            mount(
                Some(src.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::sys("bind-mount netns", e))?;
            Ok(())
        })
        .join()
        .map_err(|_| Error::Other("netns creation thread panicked".into()))?;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let ns = Self::open(name)?;
        // Loopback up, as `ip netns add` users expect.
        ns.run(crate::netlink::set_lo_up_blocking)??;
        Ok(ns)
    }

    /// Removes the name (the namespace dies with its last user).
    pub fn delete(name: &str) -> Result<(), Error> {
        let path = Self::path_of(name);
        if !path.exists() {
            return Ok(());
        }
        // Bind mounts may be stacked (e.g. propagated copies): peel them all.
        for _ in 0..8 {
            if umount2(&path, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))
    }

    /// SIGKILLs every process whose network namespace is one of `names`.
    pub fn kill_processes_in(names: &[String]) {
        use std::os::unix::fs::MetadataExt;
        let inodes: Vec<u64> = names
            .iter()
            .filter_map(|n| std::fs::metadata(Self::path_of(n)).ok())
            .map(|m| m.ino())
            .collect();
        if inodes.is_empty() {
            return;
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            if inodes.contains(&meta.ino()) && pid as u32 != std::process::id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Names of all namespaces under /run/netns starting with `prefix`.
    pub fn list(prefix: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) else {
            return vec![];
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io("dup netns fd".into(), e))?;
        std::thread::spawn(move || -> Result<T, Error> {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns", e))?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::Other("netns thread panicked".into()))?
    }

    /// Moves the calling thread into this namespace for good. Meant for a
    /// freshly forked child (`pre_exec`) or a process's main thread at start.
    pub fn enter(&self) -> Result<(), Error> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns", e))
    }
}
