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
//!
//! What a run needs from the host (a test binary, `shoal`) is named, so a
//! checkout anywhere works: a path under the guest's own /tmp or /run gets
//! its directory shared as one more 9p mount at the same path, and a path
//! the guest cannot reach fails the run with one line naming it (checked
//! on the host before booting and again in the guest).

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

/// Where the guest has a tmpfs of its own over the host's directory: what
/// a run needs there is shared with it.
const GUEST_TMPFS: &[&str] = &["/tmp", "/run"];
/// Where the guest has the kernel's own filesystems: nothing of the host's
/// is reachable there.
const GUEST_KERNEL_FS: &[&str] = &["/proc", "/sys", "/dev"];

/// A guest line naming a needed path it cannot reach (and why).
const UNREACHABLE: &str = "SHOAL-VM-UNREACHABLE=";

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
    // Encrypted networks: a vxlan device into ESP (transport mode) with
    // rfc4106(gcm(aes)), and the DRBG the kernel's IV generator seeds
    // from (without sha512 its self-test warns; the kernel cannot load
    // modules itself here: they are not in the guest's /lib/modules).
    "vxlan",
    "esp4",
    "xfrm_user",
    "gcm",
    "ghash-generic",
    "ctr",
    "seqiv",
    "sha512_generic",
    "sha3_generic",
    "jitterentropy_rng",
    "drbg",
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
SHARES
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

    /// Builds the initramfs (busybox, boot modules, /init mounting the
    /// root and `shares`, the i-th tagged `sI`) into `out`.
    fn initramfs(&self, work: &Path, out: &Path, shares: &[PathBuf]) -> std::io::Result<()> {
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
        let mounts: String = shares
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let at = sh_quote(&format!("/mnt{}", dir.display()));
                let why = sh_quote(&format!(
                    "{UNREACHABLE}{}: the guest could not mount the host's directory (9p tag s{i})",
                    dir.display()
                ));
                format!(
                    "/bin/busybox mkdir -p {at} && /bin/busybox mount -t 9p -o \
                     trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose s{i} {at} \
                     || echo {why}\n"
                )
            })
            .collect();
        std::fs::write(
            &init,
            INIT.replace("MODULES", &BOOT_MODULES.join(" "))
                .replace("SHARES\n", &mounts),
        )?;
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

    /// For a test: the VM. Without it (qemu or the Debian kernel missing:
    /// `scripts/install-deps.sh` installs both) the test fails, saying
    /// why; it never passes by skipping.
    pub fn for_test() -> Vm {
        Vm::available().unwrap_or_else(|why| panic!("{why}"))
    }

    /// Runs libtest binary `exe` in the VM (`SHOAL_BIN` = `shoal`, plus
    /// `env`) with `args` (test names, harness flags), both binaries reachable
    /// wherever they are: how a VM suite runs this machine's tests in
    /// Debian's kernel. `Err` is one line naming what the guest could not
    /// reach.
    pub fn run_tests(
        &self,
        exe: &Path,
        shoal: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Result<VmRun, String> {
        let needs = [exe.to_path_buf(), shoal.to_path_buf()];
        let mut script = format!("SHOAL_BIN={}", sh_quote(&shoal.to_string_lossy()));
        for (k, v) in env {
            script.push_str(&format!(" {k}={}", sh_quote(v)));
        }
        // The guest's console is a terminal: no colour codes in the
        // harness's summary lines the callers look for.
        script.push_str(&format!(
            " {} --color never",
            sh_quote(&exe.to_string_lossy())
        ));
        for a in args {
            script.push_str(&format!(" {}", sh_quote(a)));
        }
        script.push_str(" 2>&1");
        self.run(&script, &needs, timeout)
    }

    /// `run_tests`, and what a test prints of it: the console's last 80
    /// lines and the guest kernel's first complaint, if any. Panics with
    /// the one line when the guest cannot reach a binary.
    pub fn run_suite(
        &self,
        exe: &Path,
        shoal: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> VmRun {
        let t0 = std::time::Instant::now();
        let run = self
            .run_tests(exe, shoal, env, args, timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        let tail: Vec<&str> = run.console.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("VM ({:?}):\n{}", t0.elapsed(), tail.join("\n"));
        if let Some(t) = run.kernel_trouble() {
            eprintln!("the VM's kernel first complained:\n{t}");
        }
        run
    }

    /// Runs `script` (sh) in the VM as root, with the lab's modules loaded,
    /// killed after `timeout`; `needs` are the host's files and directories
    /// it uses (shared with the guest where it has its own /tmp or /run).
    /// The console (kernel and command output) comes back whole. `Err` is
    /// one line naming a need the guest cannot reach, and why.
    pub fn run(&self, script: &str, needs: &[PathBuf], timeout: Duration) -> Result<VmRun, String> {
        let needs = needs
            .iter()
            .map(|p| {
                std::fs::canonicalize(p).map_err(|e| {
                    format!(
                        "the VM needs {}, which the host cannot reach: {e}",
                        p.display()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shares = shares_for(&needs)?;
        let tag = format!("{}-{}", std::process::id(), crate::unique_name());
        let base = Path::new(VM_DIR).join("runs").join(&tag);
        std::fs::create_dir_all(&base).expect("VM run dir");
        let initrd = base.join("initrd.gz");
        self.initramfs(&base.join("initramfs"), &initrd, &shares)
            .expect("build the VM's initramfs");
        let cmd = base.join("cmd.sh");
        let modprobe = format!(
            "modprobe -d {} -a {}\n",
            self.modules.display(),
            LAB_MODULES.join(" ")
        );
        // The guest checks again what the host checked: one line if a
        // share did not make it.
        let checks: String = needs
            .iter()
            .map(|p| {
                let why = format!(
                    "{UNREACHABLE}{}: not found in the guest (shared directories: {})",
                    p.display(),
                    if shares.is_empty() {
                        "none".to_string()
                    } else {
                        shares
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                format!(
                    "[ -e {} ] || {{ echo {}; exit 127; }}\n",
                    sh_quote(&p.to_string_lossy()),
                    sh_quote(&why)
                )
            })
            .collect();
        std::fs::write(&cmd, format!("{modprobe}{checks}cd /tmp\n{script}\n")).expect("VM script");
        let mut qemu = Command::new("timeout");
        qemu.arg(timeout.as_secs().to_string())
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
            ]);
        for (i, dir) in shares.iter().enumerate() {
            // qemu's option syntax: a comma in a value is doubled.
            let path = dir.to_string_lossy().replace(',', ",,");
            qemu.arg("-virtfs").arg(format!(
                "local,path={path},mount_tag=s{i},security_model=passthrough,readonly=on,multidevs=remap"
            ));
        }
        let out = qemu.stdin(Stdio::null()).output().expect("run qemu");
        let _ = std::fs::remove_dir_all(&base);
        let console = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if let Some(line) = console
            .lines()
            .find_map(|l| l.trim().strip_prefix(UNREACHABLE))
        {
            return Err(format!("the VM could not reach {line}"));
        }
        let exit = console
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("SHOAL-VM-EXIT="))
            .and_then(|c| c.trim().parse().ok());
        Ok(VmRun { console, exit })
    }
}

/// The host directories to share with the guest so that it reaches
/// `needs` (canonical paths): for each one under the guest's own /tmp or
/// /run, its directory (itself if it is one), outermost only. `Err`: one
/// line naming a need the guest cannot be given.
pub fn shares_for(needs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn under(p: &Path, roots: &[&'static str]) -> Option<&'static str> {
        roots.iter().find(|r| p.starts_with(r)).copied()
    }
    let mut dirs: Vec<PathBuf> = vec![];
    for p in needs {
        if let Some(root) = under(p, GUEST_KERNEL_FS) {
            return Err(format!(
                "the VM needs {}, but the guest has its own {root}",
                p.display()
            ));
        }
        if under(p, GUEST_TMPFS).is_none() {
            continue; // on the host's root, which the guest mounts whole
        }
        let dir = if p.is_dir() {
            p.clone()
        } else {
            p.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| p.clone())
        };
        if GUEST_TMPFS.iter().any(|r| dir == Path::new(r)) {
            // Sharing all of /tmp would hide the guest's own.
            return Err(format!(
                "the VM needs {}, directly in {}, which it cannot share whole (the guest needs its own): put it in a directory there",
                p.display(),
                dir.display()
            ));
        }
        dirs.push(dir);
    }
    dirs.sort();
    let mut out: Vec<PathBuf> = vec![];
    for d in dirs {
        if !out.iter().any(|o| d.starts_with(o)) {
            out.push(d);
        }
    }
    Ok(out)
}

/// `s` as one sh word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
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
    use super::{shares_for, Vm};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// A guest kernel that stops (here: a crash asked for by sysrq) ends
    /// the run at once, without an exit code, its trace found.
    #[test]
    fn a_stopped_guest_kernel_ends_the_run_with_its_trace() {
        let vm = Vm::for_test();
        let t0 = Instant::now();
        let run = vm
            .run(
                "echo c > /proc/sysrq-trigger",
                &[],
                Duration::from_secs(300),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.exit, None, "{}", run.console);
        let trouble = run.kernel_trouble().expect("the crash's trace");
        assert!(trouble.contains("sysrq"), "{trouble}");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{:?}",
            t0.elapsed()
        );
    }

    /// Issue 28: a checkout cloned into /tmp. The guest has a /tmp of its
    /// own, so before the launcher shared what it runs, the test binary
    /// there was "not found" (exit 127) inside it. Copies of this test
    /// binary and of `shoal`, laid out as a target dir under /tmp, run
    /// in the guest through the VM suites' launcher.
    #[test]
    fn a_test_binary_in_a_target_dir_under_tmp_runs_in_the_guest() {
        let vm = Vm::for_test();
        let checkout = tempfile::Builder::new()
            .prefix("shoal-vm-")
            .tempdir_in("/tmp")
            .unwrap();
        let release = checkout.path().join("target/release");
        std::fs::create_dir_all(release.join("deps")).unwrap();
        let exe = release.join("deps/shoal_tests-copy");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        let shoal = release.join("shoal");
        std::fs::copy(crate::shoal_bin(), &shoal).unwrap();
        let run = vm
            .run_tests(
                &exe,
                &shoal,
                &[("SHOAL_VM_PROBE_DIR", &release.to_string_lossy())],
                &[
                    "--exact",
                    "vm::tests::the_shoal_binary_runs_from_where_the_suite_finds_it",
                ],
                Duration::from_secs(300),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let tail: Vec<&str> = run.console.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        assert_eq!(run.exit, Some(0), "{}", tail.join("\n"));
        assert!(
            run.console.contains("test result: ok. 1 passed"),
            "{}",
            tail.join("\n")
        );
    }

    /// The `shoal` this suite runs answers, from where the suite finds it.
    /// The test above also runs it inside the guest, from its copy under
    /// /tmp (`SHOAL_VM_PROBE_DIR`): there, the test binary and `shoal`
    /// must both be the copies.
    #[test]
    fn the_shoal_binary_runs_from_where_the_suite_finds_it() {
        let shoal = crate::shoal_bin();
        if let Ok(dir) = std::env::var("SHOAL_VM_PROBE_DIR") {
            let dir = PathBuf::from(dir);
            let exe = std::env::current_exe().unwrap();
            assert!(exe.starts_with(&dir), "{exe:?} not under {dir:?}");
            assert!(shoal.starts_with(&dir), "{shoal:?} not under {dir:?}");
        }
        let out = std::process::Command::new(&shoal)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("shoal "),
            "{out:?}"
        );
    }

    /// What the guest cannot reach fails a run with one line naming it,
    /// before anything boots.
    #[test]
    fn an_unreachable_need_fails_with_one_line_before_booting() {
        let vm = Vm {
            kernel: "/nonexistent-kernel".into(),
            modules: "/nonexistent-modules".into(),
            kver: String::new(),
        };
        let missing = Path::new("/tmp/shoal-vm-nothing-here/target/release/deps/lb-0");
        let e = vm
            .run_tests(
                missing,
                Path::new("/bin/sh"),
                &[],
                &[],
                Duration::from_secs(1),
            )
            .err()
            .expect("refused");
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("No such file"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = vm
            .run("true", &["/proc/version".into()], Duration::from_secs(1))
            .err()
            .expect("refused");
        assert!(e.contains("the guest has its own /proc"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn only_what_the_guest_shadows_is_shared_outermost_first() {
        let dir = tempfile::Builder::new()
            .prefix("shoal-vm-")
            .tempdir_in("/tmp")
            .unwrap();
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(release.join("deps")).unwrap();
        let (exe, bin) = (release.join("deps/lb-0"), release.join("shoal"));
        std::fs::write(&exe, "").unwrap();
        std::fs::write(&bin, "").unwrap();
        assert_eq!(
            shares_for(&[exe.clone(), bin.clone(), "/usr/bin/env".into()]).unwrap(),
            vec![release.clone()]
        );
        assert_eq!(
            shares_for(&["/usr/bin/env".into()]).unwrap(),
            Vec::<PathBuf>::new()
        );
        let e = shares_for(&["/tmp/x".into()]).unwrap_err();
        assert!(e.contains("directly in /tmp"), "{e}");
        let e = shares_for(&["/sys/fs/bpf/x".into()]).unwrap_err();
        assert!(e.contains("its own /sys"), "{e}");
    }
}
