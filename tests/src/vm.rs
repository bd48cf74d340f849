//! Runs a command inside Debian's distribution kernel under qemu (TCG), for
//! what this machine's kernel lacks (IPVS). The VM sees the host's root
//! read-only over 9p (so the same binaries, tests and tools run
//! unchanged), with its own /tmp and /run; modules come from the kernel
//! package that `scripts/install-deps.sh` unpacked into `VM_DIR`.
//!
//! The initramfs holds busybox and the modules for virtio and 9p; its /init
//! mounts the host's root, switches to it (so mount namespaces made inside
//! see it as their root too), runs the command from a script under
//! `VM_DIR`, prints `SHOAL-VM-EXIT=N` and powers off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const VM_DIR: &str = "/var/cache/shoal/vm";

/// The guest kernel's console level and watchdogs: warnings and stack
/// dumps shown (`quiet` hid the traces a lockup prints, leaving only its
/// one-line repeats), boot chatter not; a soft lockup or an RCU stall
/// panics at once (every CPU's stack printed), so a stuck guest
/// ends the run with its trace instead of idling until the timeout.
const KERNEL_ARGS: &str = "loglevel=5 panic=-1 softlockup_panic=1 softlockup_all_cpu_backtrace=1 \
     sysctl.kernel.panic_on_rcu_stall=1";

/// Modules the initramfs loads to reach the host's root.
const BOOT_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
];

/// Modules a Shoal lab needs that Debian builds as modules.
pub const LAB_MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "ip_vs",
    "ip_vs_rr",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_ct",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in MODULES; do /bin/busybox insmod /mods/$m.ko; done
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /mnt || echo "SHOAL-VM: 9p mount failed"
/bin/busybox mount -t proc proc /mnt/proc
/bin/busybox mount -t sysfs sys /mnt/sys
/bin/busybox mount -t devtmpfs dev /mnt/dev
/bin/busybox mount -t tmpfs tmp /mnt/tmp
/bin/busybox mount -t tmpfs run /mnt/run
/bin/busybox mount -t bpf bpf /mnt/sys/fs/bpf
/bin/busybox mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup 2>/dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export SHOAL_CMD=$(/bin/busybox sed -n 's/.*shoal\.cmd=\([^ ]*\).*/\1/p' /proc/cmdline)
exec /bin/busybox switch_root /mnt /bin/sh -c '/bin/sh "$SHOAL_CMD"; echo "SHOAL-VM-EXIT=$?"; /bin/busybox poweroff -f'
"#;

pub struct Vm {
    kernel: PathBuf,
    modules: PathBuf,
    kver: String,
}

/// What a run printed (the console) and the command's exit code (None: it
/// never reported one: a crash, a timeout).
pub struct VmRun {
    pub console: String,
    pub exit: Option<i32>,
}

impl VmRun {
    /// The kernel's first complaint (a BUG, lockup, stall, oops or panic)
    /// with the stack dump after it, if the console holds one: a failing
    /// run's tail alone shows only the repeats, never the first trace.
    pub fn kernel_trouble(&self) -> Option<String> {
        let lines: Vec<&str> = self.console.lines().collect();
        let first = lines.iter().position(|l| {
            [
                "BUG:",
                "Oops",
                "Kernel panic",
                "rcu: INFO",
                "WARNING:",
                "hung_task",
            ]
            .iter()
            .any(|m| l.contains(m))
        })?;
        Some(lines[first..lines.len().min(first + 80)].join("\n"))
    }
}

impl Vm {
    /// The VM if everything it needs is installed (`scripts/install-deps.sh`
    /// installs it), else why not.
    pub fn available() -> Result<Vm, String> {
        let have = |bin: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have("qemu-system-x86_64") {
            return Err("qemu-system-x86_64 is not installed".into());
        }
        if !Path::new("/bin/busybox").exists() {
            return Err("busybox-static is not installed".into());
        }
        let kver = std::fs::read_to_string(Path::new(VM_DIR).join("ready"))
            .map_err(|_| format!("no VM kernel in {VM_DIR} (run scripts/install-deps.sh)"))?
            .trim()
            .to_string();
        let root = Path::new(VM_DIR).join("root");
        Ok(Vm {
            kernel: root.join("boot").join(format!("vmlinuz-{kver}")),
            modules: root.clone(),
            kver,
        })
    }

    fn module_file(&self, name: &str) -> Option<PathBuf> {
        let dir = self
            .modules
            .join("lib/modules")
            .join(&self.kver)
            .join("kernel");
        let want = format!("{name}.ko");
        walk(&dir).into_iter().find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f == want || f.starts_with(&format!("{want}.")))
        })
    }

    /// Builds the initramfs (busybox, boot modules, /init) into `out`.
    fn initramfs(&self, work: &Path, out: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(work);
        for d in ["bin", "mods", "proc", "sys", "dev", "mnt", "tmp"] {
            std::fs::create_dir_all(work.join(d))?;
        }
        std::fs::copy("/bin/busybox", work.join("bin/busybox"))?;
        for m in BOOT_MODULES {
            let f = self
                .module_file(m)
                .ok_or_else(|| std::io::Error::other(format!("module {m} not in the VM kernel")))?;
            std::fs::copy(f, work.join("mods").join(format!("{m}.ko")))?;
        }
        let init = work.join("init");
        std::fs::write(&init, INIT.replace("MODULES", &BOOT_MODULES.join(" ")))?;
        std::fs::set_permissions(
            &init,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        let st = Command::new("sh")
            .current_dir(work)
            .args([
                "-c",
                &format!(
                    "find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
                    out.display()
                ),
            ])
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other("cpio failed"));
        }
        Ok(())
    }

    /// For a test: the VM, or None (said on stderr) where qemu is not
    /// installed; anything else missing fails the test.
    pub fn for_test() -> Option<Vm> {
        match Vm::available() {
            Ok(vm) => Some(vm),
            Err(why) if why.contains("qemu") => {
                eprintln!("not run: {why}");
                None
            }
            Err(why) => panic!("{why}"),
        }
    }

    /// Runs `script` (sh) in the VM as root, with the lab's modules loaded,
    /// killed after `timeout`. The console (kernel and command output)
    /// comes back whole.
    pub fn run(&self, script: &str, timeout: Duration) -> VmRun {
        let tag = format!("{}-{}", std::process::id(), crate::unique_name());
        let base = Path::new(VM_DIR).join("runs").join(&tag);
        std::fs::create_dir_all(&base).expect("VM run dir");
        let initrd = base.join("initrd.gz");
        self.initramfs(&base.join("initramfs"), &initrd)
            .expect("build the VM's initramfs");
        let cmd = base.join("cmd.sh");
        let modprobe = format!(
            "modprobe -d {} -a {}\n",
            self.modules.display(),
            LAB_MODULES.join(" ")
        );
        std::fs::write(&cmd, format!("{modprobe}cd /tmp\n{script}\n")).expect("VM script");
        let out = Command::new("timeout")
            .arg(timeout.as_secs().to_string())
            .args(["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2"])
            .args(["-nographic", "-no-reboot", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 {KERNEL_ARGS} shoal.cmd={}",
                cmd.display()
            ))
            .args([
                "-virtfs",
                "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run qemu");
        let _ = std::fs::remove_dir_all(&base);
        let console = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let exit = console
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("SHOAL-VM-EXIT="))
            .and_then(|c| c.trim().parse().ok());
        VmRun { console, exit }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Vm;
    use std::time::{Duration, Instant};

    /// A guest kernel that stops (here: a crash asked for by sysrq) ends
    /// the run at once, without an exit code, its trace found.
    #[test]
    fn a_stopped_guest_kernel_ends_the_run_with_its_trace() {
        let Some(vm) = Vm::for_test() else {
            return;
        };
        let t0 = Instant::now();
        let run = vm.run("echo c > /proc/sysrq-trigger", Duration::from_secs(300));
        assert_eq!(run.exit, None, "{}", run.console);
        let trouble = run.kernel_trouble().expect("the crash's trace");
        assert!(trouble.contains("sysrq"), "{trouble}");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{:?}",
            t0.elapsed()
        );
    }
}
