//! Compiles the C eBPF programs under c/ with clang (clang-19 by default,
//! `SHOAL_CLANG` overrides) so that `cargo build` needs no extra step.
use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["overlay", "resolver"];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("SHOAL_CLANG").unwrap_or_else(|_| "clang-19".into());
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-env-changed=SHOAL_CLANG");
    let arch_include = format!("/usr/include/{}-linux-gnu", env::consts::ARCH);
    for name in PROGRAMS {
        let src = format!("c/{name}.bpf.c");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-I{arch_include}"))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} ({e}): install it with `apt-get install -y clang-19 libbpf-dev`")
            });
        assert!(status.success(), "{clang} failed on {src}");
    }
}
