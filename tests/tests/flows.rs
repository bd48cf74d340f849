//! `shoal debug flows` on a lab: a task's requests to a service's VIP, a
//! request from the outside client through the mesh, and a request to a
//! service with no healthy backend show up in the cluster's flows, gathered
//! from every node by the manager, with both tasks named and the verdict.

use std::time::{Duration, SystemTime};

use shoal_tests::{ok, refused, shoal_bin, wait, Lab};

fn flows(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["debug", "flows", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(lab.shoal_on("n1", &all))).expect("flows JSON")
}

fn list(page: &serde_json::Value) -> Vec<serde_json::Value> {
    page["flows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn flows_show_who_talked_to_a_service_and_what_happened() {
    let lab = Lab::up(3, 1, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    let create = |args: &[&str]| {
        let mut all = vec!["service", "create", "--network", "appnet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", &bin, "whoami", "--port", "80"]);
        ok(lab.shoal_on("n1", &all));
    };
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create(&["--name", "web", "--replicas", "2", "-p", "8080:80"]);
    create(&["--name", "cli", "--constraint", "node.hostname==n2"]);
    // Never healthy: its VIP has no backend.
    create(&[
        "--name",
        "sick",
        "-d",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
    ]);
    let curl =
        |url: &str| lab.shoal_on("n2", &["exec", "cli.1", "--", "curl", "-s", "-m", "2", url]);
    for _ in 0..3 {
        assert!(ok(curl("http://web/")).contains("Hostname"));
    }
    let client = format!("{}-client", lab.name);
    lab.run_ok(
        &client,
        &["curl", "-s", "-m", "3", "http://198.18.0.3:8080/"],
    );

    // VIP flows from the client task on n2, both ends named, and the
    // mesh flow that entered at n3 from the outside client.
    let mut page = serde_json::Value::Null;
    wait("web's flows from n2 and n3", 10, || {
        page = flows(&lab, &["--service", "web"]);
        let f = list(&page);
        f.iter().filter(|f| f["kind"] == "vip").count() >= 3
            && f.iter().any(|f| f["kind"] == "mesh")
    });
    assert!(page["silent"].as_array().unwrap().is_empty(), "{page}");
    for f in list(&page) {
        assert_eq!(f["service"], "web", "{f}");
        assert_eq!(f["verdict"], "forwarded", "{f}");
        assert!(
            f["backend_task"].as_str().unwrap().starts_with("web."),
            "{f}"
        );
        if f["kind"] == "vip" {
            assert_eq!(f["node"], "n2", "{f}");
            assert!(
                f["client_task"].as_str().unwrap().starts_with("cli.1."),
                "{f}"
            );
            assert!(f["address"].as_str().unwrap().ends_with(":80"), "{f}");
            assert_eq!(f["network"], "appnet");
        } else {
            assert_eq!(f["node"], "n3", "{f}");
            assert!(f["client"].as_str().unwrap().starts_with("198.18.0.200:"));
            assert_eq!(f["address"], "198.18.0.3:8080");
            assert_eq!(f["network"], "ingress");
        }
    }
    // A VIP whose only task is never healthy: the client's SYN is dropped
    // at its own node for want of a backend. The task is replaced now and
    // then (unhealthy), and its name resolves only while one exists.
    let mut sick = serde_json::Value::Null;
    wait("sick's drop", 30, || {
        let _ = curl("http://sick/");
        sick = flows(&lab, &["--service", "sick"]);
        list(&sick).iter().any(|f| f["verdict"] == "dropped")
    });
    let d = list(&sick);
    assert!(
        d.iter().any(|f| f["verdict"] == "dropped"
            && f["reason"] == "no_backend"
            && f["node"] == "n2"
            && f["client_task"]
                .as_str()
                .unwrap_or("")
                .starts_with("cli.1.")),
        "{sick}"
    );

    // --since: nothing of web before now, then the one new request.
    std::thread::sleep(Duration::from_millis(50));
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(50));
    assert!(list(&flows(&lab, &["--service", "web", "--since", &now])).is_empty());
    ok(curl("http://web/"));
    wait("the new flow", 10, || {
        list(&flows(&lab, &["--service", "web", "--since", &now])).len() == 1
    });
    // The table names both ends too.
    let table = ok(lab.shoal_on("n1", &["debug", "flows", "--service", "web"]));
    assert!(
        table.contains("VERDICT") && table.contains("(cli.1."),
        "{table}"
    );

    // Bad input: refused with one line; workers send you to a manager.
    refused(
        &lab,
        "n1",
        &["debug", "flows", "--since", "soon"],
        "bad --since",
    );
    refused(
        &lab,
        "n1",
        &["debug", "flows", "--service", "nope"],
        "not found",
    );
    refused(&lab, "n2", &["debug", "flows"], "manager");
    // Malformed queries straight at the API: 400, and it keeps answering.
    for body in ["{not json", r#"{"limit": "x"}"#] {
        let cmd = format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$SHOAL_SOCKET\" -X POST -H 'content-type: application/json' -d '{body}' http://x/v1/flows"
        );
        let o = shoal_tests::shoal(&[
            "lab", "exec", "--name", &lab.name, "n1", "--", "sh", "-c", &cmd,
        ]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "400", "{body}");
    }
    assert!(!list(&flows(&lab, &["--service", "web"])).is_empty());
}
