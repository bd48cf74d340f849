//! Stacks from Compose files on a lab cluster: deploy (two services, two
//! networks, aliases, a health check, a placement constraint), redeploy
//! without change, an edited file updating only what changed, bad files
//! refused with precise messages, and `stack rm` leaving nothing behind.

use std::collections::BTreeSet;

use serde_json::Value;
use shoal_tests::services::{curl, lab_task_namespaces, running, task_ns};
use shoal_tests::{ok, shoal_bin, wait, Lab};

fn compose(api_port: u16) -> String {
    let bin = shoal_bin().to_string_lossy().into_owned();
    format!(
        r#"
version: "3.8"
services:
  web:
    image: traefik/whoami
    command: ["{bin}", "whoami", "--port", "80"]
    networks:
      front: {{aliases: [www]}}
      back:
    healthcheck:
      test: ["CMD", "curl", "-sf", "http://127.0.0.1:80/"]
      interval: 300ms
      timeout: 2s
    deploy:
      replicas: 2
      placement: {{constraints: [node.role==worker]}}
      update_config: {{monitor: 1s}}
  api:
    command: {bin} whoami --port {api_port}
    networks: [back]
networks:
  front: {{attachable: true}}
  back: {{}}
"#
    )
}

/// The compose files of one test, in a directory removed when dropped
/// (also if an assertion fails).
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

fn ids(lab: &Lab, service: &str) -> BTreeSet<String> {
    running(lab, "n1", service)
        .into_iter()
        .map(|t| t.id)
        .collect()
}

#[test]
fn a_compose_stack_deploys_redeploys_updates_and_goes_away() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    let files = Files::new();
    let f1 = files.write("v1.yml", &compose(8080));

    let o = lab.shoal_on("n1", &["stack", "deploy", "-c", &f1, "app"]);
    let out = ok(o.clone());
    for line in [
        "Creating network app_back",
        "Creating network app_front",
        "Creating service app_api",
        "Creating service app_web",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("services.web.image: ignored: Shoal runs processes, not images"),
        "{err}"
    );
    wait("the stack running", 40, || {
        running(&lab, "n1", "app_web").len() == 2 && running(&lab, "n1", "app_api").len() == 1
    });
    let web = running(&lab, "n1", "app_web");
    assert!(web.iter().all(|t| t.node != "n1"), "placed on workers only");
    // Both networks made with the stack's label, one attachable; the
    // aliases as Docker adds them.
    let front: Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["network", "inspect", "app_front"])))
            .unwrap();
    let front = if front.is_array() {
        front[0].clone()
    } else {
        front
    };
    assert_eq!(front["Attachable"], true);
    assert_eq!(front["Labels"]["com.docker.stack.namespace"], "app");
    let inspect: Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["service", "inspect", "app_web"]))).unwrap();
    let nets = &inspect[0]["Spec"]["TaskTemplate"]["Networks"];
    let aliases: Vec<&Value> = nets
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["Aliases"])
        .collect();
    assert!(
        aliases.contains(&&serde_json::json!(["web", "www"])),
        "{nets}"
    );
    // web reaches api across nodes on the back network.
    let api = &running(&lab, "n1", "app_api")[0];
    let answer = curl(&lab, &task_ns(&lab, &web[0]), &format!("{}:8080", api.ip));
    assert!(answer.contains("Task: app_api.1."), "{answer}");

    // The same file again: nothing changes.
    let (web_ids, api_ids) = (ids(&lab, "app_web"), ids(&lab, "app_api"));
    let out = ok(lab.shoal_on("n1", &["stack", "deploy", "-c", &f1, "app"]));
    assert!(out.contains("Unchanged service app_web"), "{out}");
    assert!(out.contains("Unchanged service app_api"), "{out}");
    assert!(!out.contains("Creating"), "{out}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(ids(&lab, "app_web"), web_ids);
    assert_eq!(ids(&lab, "app_api"), api_ids);

    // An edited file: only api is updated.
    let f2 = files.write("v2.yml", &compose(8081));
    let out = ok(lab.shoal_on("n1", &["stack", "deploy", "-c", &f2, "app"]));
    assert!(out.contains("Updating service app_api"), "{out}");
    assert!(out.contains("Unchanged service app_web"), "{out}");
    wait("api on its new port", 30, || {
        let r = running(&lab, "n1", "app_api");
        r.len() == 1 && r[0].command.last().map(String::as_str) == Some("8081")
    });
    assert_eq!(ids(&lab, "app_web"), web_ids);

    let ls = ok(lab.shoal_on("n1", &["stack", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["app", "2"]),
        "{ls}"
    );
    let svcs = ok(lab.shoal_on("n1", &["stack", "services", "app"]));
    assert!(svcs.contains("app_web") && svcs.contains("2/2"), "{svcs}");
    let ps = ok(lab.shoal_on("n1", &["stack", "ps", "app"]));
    assert!(ps.contains("app_web.1") && ps.contains("app_api.1"), "{ps}");

    // Bad files: precise messages, and nothing changes.
    for (text, needle) in [
        ("services: [web".to_string(), "bad.yml: "),
        (
            "services: {web: {command: [x], deploy: {replics: 2}}}".to_string(),
            "services.web.deploy.replics: unknown key",
        ),
        (
            "services: {web: {image: nginx}}".to_string(),
            "services.web: no command: Shoal runs processes, not images",
        ),
        (
            "services: {a: {command: x, ports: ['80:80']}, b: {command: y, ports: ['80:80']}}"
                .to_string(),
            "port 80/tcp is published by both app_a and app_b",
        ),
    ] {
        let f = files.write("bad.yml", &text);
        let o = lab.shoal_on("n1", &["stack", "deploy", "-c", &f, "app"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{text}: {err}");
    }
    assert!(ok(lab.shoal_on("n1", &["stack", "ls"])).contains("app "));
    assert_eq!(ids(&lab, "app_web"), web_ids);
    // `driver_opts: {encrypted: ""}` asks for an encrypted network: this
    // kernel cannot carry one, and the manager says so (the VM suite runs
    // encrypted networks where the kernel can).
    let f = files.write(
        "sec.yml",
        "services: {a: {command: [sleep, '100'], networks: [sec]}}\nnetworks: {sec: {driver_opts: {encrypted: ''}}}",
    );
    let o = lab.shoal_on("n1", &["stack", "deploy", "-c", &f, "sec"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no node of the swarm can carry an encrypted network"),
        "{err}"
    );
    assert!(!ok(lab.shoal_on("n1", &["network", "ls"])).contains("sec_sec"));

    let out = ok(lab.shoal_on("n1", &["stack", "rm", "app"]));
    assert!(out.contains("Removing service app_web"), "{out}");
    assert!(out.contains("Removing network app_front"), "{out}");
    assert!(ok(lab.shoal_on("n1", &["service", "ls", "--format", "json"])).is_empty());
    let nets = ok(lab.shoal_on("n1", &["network", "ls"]));
    assert!(!nets.contains("app_"), "{nets}");
    wait("no task namespace left", 20, || {
        lab_task_namespaces(&lab).is_empty()
    });
}
