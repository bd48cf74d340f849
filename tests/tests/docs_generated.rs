//! What operators install besides the binary, generated from the CLI so it
//! never drifts: shell completions and man pages.

use shoal_tests::shoal;

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let o = shoal(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("shoal") && text.contains("service"),
            "{shell}"
        );
    }
    assert!(!shoal(&["completions", "tcsh"]).status.success());
    let o = shoal(&["man"]);
    assert!(o.status.success());
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(page.contains(".TH shoal"), "{page}");
    let tmp = tempfile::Builder::new()
        .prefix("shoal-man-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    assert!(shoal(&["man", "--dir", dir.to_str().unwrap()])
        .status
        .success());
    for page in ["shoal.1", "shoal-service.1", "shoal-debug.1"] {
        assert!(dir.join(page).exists(), "{page}");
    }
}
