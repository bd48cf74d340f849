//! Prometheus metrics on a lab: every node serves `/metrics` on its
//! underlay address at 9323; a scrape parses with a Prometheus text-format
//! parser, its counters move when traffic flows (mesh entry, service
//! backends, endpoint traffic, DNS), managers report Raft, and every metric
//! the shipped Grafana dashboard queries is exported.

use std::collections::BTreeMap;

use shoal_tests::services::running;
use shoal_tests::{ok, shoal_bin, wait, Lab};

/// One node's metrics, from the lab's outside client: (name, labels) ->
/// value, and the raw text.
fn scrape(lab: &Lab, ip: &str) -> (BTreeMap<(String, String), f64>, String) {
    let client = format!("{}-client", lab.name);
    let out = lab.run_ok(
        &client,
        &[
            "curl",
            "-sf",
            "-m",
            "5",
            &format!("http://{ip}:9323/metrics"),
        ],
    );
    let lines = out.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut m = BTreeMap::new();
    for s in parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or(0.0),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "node")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        m.insert((s.metric, labels.join(",")), v);
    }
    (m, out)
}

/// The sum of a metric over all its label sets whose labels contain
/// `with`.
fn sum(m: &BTreeMap<(String, String), f64>, name: &str, with: &str) -> f64 {
    m.iter()
        .filter(|((n, l), _)| n == name && l.contains(with))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn nodes_export_metrics_that_move_with_traffic_and_the_dashboard_names_only_those() {
    let lab = Lab::up(2, 0, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    ));
    let (before, text) = scrape(&lab, "198.18.0.1");
    assert!(text.contains("node=\"n1\""), "every series names its node");
    let client = format!("{}-client", lab.name);
    for _ in 0..20 {
        lab.run_ok(
            &client,
            &["curl", "-sf", "-m", "3", "http://198.18.0.1:8080/"],
        );
    }
    // A name lookup inside a task: the embedded DNS server answers.
    let task = running(&lab, "n1", "web")[0].id.clone();
    ok(lab.shoal_on("n1", &["exec", &task, "--", "getent", "hosts", "web"]));
    let (after, after_text) = scrape(&lab, "198.18.0.1");
    let grew = |name: &str, with: &str| {
        let (b, a) = (sum(&before, name, with), sum(&after, name, with));
        assert!(a > b, "{name}{{{with}}}: {b} -> {a}");
    };
    grew(
        "shoal_dataplane_forwarded_packets_total",
        "action=mesh_entry",
    );
    grew("shoal_service_packets_total", "service=web");
    grew("shoal_service_bytes_total", "service=web");
    grew("shoal_endpoint_packets_total", "direction=rx");
    grew("shoal_dns_queries_total", "result=local");
    grew("shoal_dns_query_duration_seconds_count", "source=local");
    assert_eq!(sum(&after, "shoal_gossip_members", "state=alive"), 2.0);
    // n2's task endpoints reached n1 through gossip after n1 started: their
    // propagation times are observed (and well inside the histogram).
    let seen = sum(&after, "shoal_gossip_propagation_seconds_count", "");
    assert!(seen >= 1.0, "propagation observed: {seen}");
    let secs = sum(&after, "shoal_gossip_propagation_seconds_sum", "") / seen;
    assert!(secs < 10.0, "mean propagation {secs} s");
    assert!(sum(&after, "shoal_raft_term", "") >= 1.0, "n1 is a manager");
    assert_eq!(sum(&after, "shoal_raft_is_leader", ""), 1.0);
    assert!(sum(&after, "shoal_tasks", "state=running") >= 1.0);
    assert!(sum(&after, "shoal_conntrack_capacity_entries", "table=mesh") > 0.0);
    assert!(sum(&after, "shoal_conntrack_entries", "table=mesh") >= 1.0);
    assert!(sum(&after, "shoal_maglev_table_slots", "") > 0.0);
    // A worker has no Raft series but the rest.
    let (n2, _) = scrape(&lab, "198.18.0.2");
    assert!(!n2.keys().any(|(n, _)| n.starts_with("shoal_raft_")));
    assert!(sum(&n2, "shoal_gossip_members", "state=alive") == 2.0);

    // The dashboard's queries name only exported metrics.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/shoal.json"),
        )
        .expect("grafana/shoal.json"),
    )
    .expect("dashboard JSON");
    // Every series name as exposed (histograms as their _bucket, _sum and
    // _count series, which is what queries name).
    let exported: std::collections::BTreeSet<&str> = after_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut named = 0;
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                named += 1;
                assert!(
                    exported.contains(name.as_str()),
                    "panel {:?} queries {name}, which no node exports",
                    p["title"]
                );
            }
        }
    }
    assert!(named >= 10, "the dashboard queries {named} metrics");
}

/// The `shoal_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("shoal_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn the_metrics_port_refuses_what_it_does_not_serve() {
    let lab = Lab::up(1, 0, "tc");
    let client = format!("{}-client", lab.name);
    let o = lab.run(
        &client,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://198.18.0.1:9323/nothing",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
    // A garbage request line: the server answers 400 or closes, and still
    // serves the next scrape.
    let _ = lab.run(
        &client,
        &[
            "python3",
            "-c",
            "import socket\ns=socket.create_connection(('198.18.0.1',9323),3)\ns.sendall(b'BLAH \\x00\\xff\\r\\n\\r\\n')\ns.settimeout(3)\ntry: s.recv(100)\nexcept Exception: pass",
        ],
    );
    wait("metrics still served", 5, || {
        lab.run(&client, &["curl", "-sf", "http://198.18.0.1:9323/metrics"])
            .status
            .success()
    });
}
