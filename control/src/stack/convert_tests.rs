//! What a Compose file becomes: Docker's names, labels and defaults, the
//! keys that cannot be honoured refused by name.

use super::super::compose::parse;
use super::*;

fn stack(text: &str) -> Result<Stack, String> {
    let p = parse(&[("s.yml".into(), text.into())])?;
    convert("app", &p.file)
}

#[test]
fn names_labels_aliases_and_defaults_as_docker_makes_them() {
    let s = stack(
        r#"
services:
  web:
    command: ["shoal", "whoami"]
    ports: ["8080:80"]
    networks: {front: {aliases: [www]}, back: }
    healthcheck: {test: ["CMD", "curl", "-f", "http://x/a b"], interval: 1s, retries: 2}
    deploy:
      replicas: 3
      placement: {constraints: [node.role==worker], preferences: [{spread: node.labels.zone}]}
      restart_policy: {condition: on-failure, delay: 1s}
      update_config: {parallelism: 2, delay: 1m30s, order: start-first, failure_action: rollback}
  db:
    entrypoint: shoal
    command: whoami --port 5432
    environment: [A=1, B=two]
    deploy: {mode: global, endpoint_mode: dnsrr}
networks:
  front: {attachable: true, driver_opts: {encrypted: ""}}
  back: {ipam: {config: [{subnet: 10.50.0.0/24}]}}
  outside: {external: true}
"#,
    )
    .unwrap();
    let web = s.services.iter().find(|s| s.name == "app_web").unwrap();
    assert_eq!(web.mode, Mode::Replicated { replicas: 3 });
    assert_eq!(web.networks[0].target, "app_back");
    assert_eq!(web.networks[0].aliases, ["web"]);
    assert_eq!(web.networks[1].target, "app_front");
    assert_eq!(web.networks[1].aliases, ["web", "www"]);
    assert_eq!(web.health.as_ref().unwrap().cmd, "curl -f 'http://x/a b'");
    assert_eq!(web.health.as_ref().unwrap().interval_ms, 1000);
    assert_eq!(web.update.delay_ms, 90_000);
    assert_eq!(web.update.order, UpdateOrder::StartFirst);
    assert_eq!(web.restart.condition, RestartCondition::OnFailure);
    assert_eq!(web.placement_prefs, ["spread=node.labels.zone"]);
    assert_eq!(web.labels[NAMESPACE_LABEL], "app");
    let db = s.services.iter().find(|s| s.name == "app_db").unwrap();
    assert_eq!(db.command, ["shoal", "whoami", "--port", "5432"]);
    assert_eq!(db.mode, Mode::Global);
    assert_eq!(db.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(db.networks[0].target, "app_default");
    assert_eq!(db.env, ["A=1", "B=two"]);
    assert!(s
        .networks
        .contains(&StackNetwork::External("outside".into())));
    let back = s
        .networks
        .iter()
        .find_map(|n| match n {
            StackNetwork::Own(n) if n.name == "app_back" => Some(n),
            _ => None,
        })
        .unwrap();
    assert_eq!(back.subnet.unwrap().to_string(), "10.50.0.0/24");
    assert!(!back.encrypted);
    let front = s.networks.iter().find_map(|n| match n {
        StackNetwork::Own(n) if n.name == "app_front" => Some(n),
        _ => None,
    });
    assert!(front.unwrap().encrypted, "driver_opts: {{encrypted: \"\"}}");
    assert!(s
        .networks
        .iter()
        .any(|n| matches!(n, StackNetwork::Own(n) if n.name == "app_default")));
}

#[test]
fn what_cannot_be_honoured_is_refused_by_name() {
    for (text, needle) in [
        (
            "services: {web: {image: nginx}}",
            "services.web: no command",
        ),
        (
            "services: {a: {command: x, ports: ['80:80']}, b: {command: y, ports: ['80:80']}}",
            "port 80/tcp is published by both app_a and app_b",
        ),
        (
            "services: {a: {command: x, networks: [nope]}}",
            "network \"nope\" is not declared",
        ),
        (
            "services: {a: {command: x, ports: ['127.0.0.1:80:80']}}",
            "services.a.ports[0]",
        ),
        (
            "services: {a: {command: x, deploy: {mode: global, replicas: 2}}}",
            "replicas with mode global",
        ),
        (
            "services: {a: {command: x}}\nnetworks: {default: {driver: bridge}}",
            "networks.default.driver",
        ),
        (
            "services: {a: {command: x, deploy: {update_config: {delay: soon}}}}",
            "services.a.deploy.update_config.delay",
        ),
        (
            "services: {a: {command: x}}\nnetworks: {default: {driver_opts: {mtu: 1400}}}",
            "networks.default.driver_opts.mtu: unknown option",
        ),
        (
            "services: {a: {command: x}}\nnetworks: {default: {driver_opts: {encrypted: maybe}}}",
            "networks.default.driver_opts.encrypted",
        ),
    ] {
        let e = stack(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}
