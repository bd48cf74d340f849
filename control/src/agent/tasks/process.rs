//! Starting a task's process in its own namespaces: the task's network
//! namespace (its endpoints), a new UTS namespace (hostname = the task's
//! short id, as Docker names containers) and a new mount namespace in which
//! /etc/resolv.conf (nameserver 127.0.0.11, the embedded DNS) and
//! /etc/hosts (the task's name) are bind-mounted from the task's directory.
//! Its own session and process group, so a stop signals the whole group.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// Everything needed to start one task.
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub netns: PathBuf,
    pub hostname: String,
    pub dir: PathBuf,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path with a NUL byte")
}

/// Writes the task's hosts and resolv.conf into its directory.
pub fn write_files(dir: &Path, hostname: &str, addrs: &[std::net::Ipv4Addr]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for a in addrs {
        hosts.push_str(&format!("{a}\t{hostname}\n"));
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.11\noptions ndots:0\n",
    )?;
    Ok(())
}

/// A task's PATH: the usual one, then the daemon's own directory, so a
/// task runs `shoal whoami` (the built-in workload) where shoal is not
/// installed on the PATH, as in a lab run from a checkout.
fn task_path() -> String {
    let mut path = String::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.to_string_lossy().into_owned()))
    {
        if !path.split(':').any(|p| p == dir) {
            path = format!("{path}:{dir}");
        }
    }
    path
}

pub fn spawn(l: &Launch) -> Result<Child> {
    let Some(prog) = l.argv.first() else {
        bail!("no command");
    };
    let ns = File::open(&l.netns).with_context(|| format!("{}", l.netns.display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.dir.join("log"))?;
    // Everything the child needs after fork, prepared before it.
    let hostname = CString::new(l.hostname.clone())?;
    let root = CString::new("/")?;
    let resolv_src = cstr(&l.dir.join("resolv.conf"))?;
    let hosts_src = cstr(&l.dir.join("hosts"))?;
    let resolv_dst = CString::new("/etc/resolv.conf")?;
    let hosts_dst = CString::new("/etc/hosts")?;
    let mut cmd = Command::new(prog);
    cmd.args(&l.argv[1..])
        .env_clear()
        .env("PATH", task_path())
        .env("HOME", "/root")
        .env("HOSTNAME", &l.hostname)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(l.workdir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let nsfd = ns.as_raw_fd();
    // SAFETY: between fork and exec only raw syscalls on memory prepared
    // above (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setns(nsfd, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWNS))?;
            check(libc::sethostname(
                hostname.as_ptr(),
                hostname.as_bytes().len(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in [(&resolv_src, &resolv_dst), (&hosts_src, &hosts_dst)] {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::setsid())?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {prog:?}"))?;
    drop(ns);
    Ok(child)
}

/// A running task's namespaces (net, uts, mnt), opened from its process,
/// to run something inside them (`shoal exec`, health checks).
pub struct TaskNs {
    files: [File; 3],
}

impl TaskNs {
    pub fn open(pid: u32) -> std::io::Result<Self> {
        let open = |ns: &str| File::open(format!("/proc/{pid}/ns/{ns}"));
        Ok(Self {
            files: [open("net")?, open("uts")?, open("mnt")?],
        })
    }

    /// The fds and kinds for `enter` (copy them into a pre_exec closure,
    /// keep `self` alive until the spawn returned).
    pub fn fds(&self) -> [(i32, libc::c_int); 3] {
        [
            (self.files[0].as_raw_fd(), libc::CLONE_NEWNET),
            (self.files[1].as_raw_fd(), libc::CLONE_NEWUTS),
            (self.files[2].as_raw_fd(), libc::CLONE_NEWNS),
        ]
    }
}

/// Enters the namespaces: raw setns calls only, safe between fork and exec.
pub fn enter(fds: &[(i32, libc::c_int); 3]) -> std::io::Result<()> {
    for (fd, kind) in fds {
        // SAFETY: plain syscall on fds the parent keeps open.
        if unsafe { libc::setns(*fd, *kind) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `sh -c CMD` inside the namespaces (net, uts, mnt) of process
/// `pid`; true when it exits 0 within `timeout`.
pub async fn health_check(pid: u32, cmd: &str, timeout: std::time::Duration) -> bool {
    let Ok(ns) = TaskNs::open(pid) else {
        return false;
    };
    let fds = ns.fds();
    let mut c = tokio::process::Command::new("/bin/sh");
    c.args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only `enter` (raw setns) between fork and exec.
    unsafe {
        c.pre_exec(move || enter(&fds));
    }
    let Ok(mut child) = c.spawn() else {
        return false;
    };
    drop(ns);
    matches!(
        tokio::time::timeout(timeout, child.wait()).await,
        Ok(Ok(s)) if s.success()
    )
}

/// Signals a task's process group.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
}
