//! Listings shared by `service` and `stack`: services and tasks as Docker
//! prints them (tables, or one JSON row per line with the table's values
//! under Docker's names, `crate::wire`'s rows).

use std::collections::{BTreeMap, BTreeSet};

use crate::output::{print_rows, print_table, Format};
use crate::wire::{PublishMode, ServiceInspect, ServiceLsRow, ServiceRow, TaskInspect, TaskRow};

/// Docker's short ids (12 characters).
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Docker's `units.HumanDuration`: `Less than a second`, `5 seconds`,
/// `About a minute`, `3 hours`, `2 weeks`.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    let minutes = ms / 60_000;
    // Docker rounds hours (and what is counted from them) to the nearest.
    let hours = (ms as f64 / 3_600_000.0 + 0.5) as u64;
    match (secs, minutes, hours) {
        (0, _, _) => "Less than a second".into(),
        (1, _, _) => "1 second".into(),
        (2..=59, _, _) => format!("{secs} seconds"),
        (_, 1, _) => "About a minute".into(),
        (_, 2..=59, _) => format!("{minutes} minutes"),
        (_, _, 1) => "About an hour".into(),
        (_, _, 2..=47) => format!("{hours} hours"),
        (_, _, 48..=335) => format!("{} days", hours / 24),
        (_, _, 336..=1439) => format!("{} weeks", hours / 24 / 7),
        (_, _, 1440..=17519) => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", ms / 3_600_000 / 24 / 365),
    }
}

/// `running` -> `Running`, as Docker shows states.
pub fn capitalized(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Docker's IMAGE column: a task here is a command, so its program (as
/// the managers' `service ls` rows word it).
pub fn image_of(command: &[String]) -> String {
    command
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default()
}

/// A `service ls` row as Docker prints it (short id, no labels).
pub fn service_ls_row(r: &ServiceRow) -> ServiceLsRow {
    ServiceLsRow {
        id: short_id(&r.row.id),
        ..r.row.clone()
    }
}

/// `service ls` rows.
pub fn print_services(rows: &[ServiceRow], format: Format) -> anyhow::Result<()> {
    let rows: Vec<ServiceLsRow> = rows.iter().map(service_ls_row).collect();
    match format {
        Format::Json => print_rows(&rows),
        Format::Table => {
            let t: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| vec![r.id, r.name, r.mode, r.replicas, r.ports])
                .collect();
            print_table(&["ID", "NAME", "MODE", "REPLICAS", "PORTS"], &t);
            Ok(())
        }
    }
}

/// A service's host-mode published ports, as Docker's task PORTS column
/// shows them (`*:8080->80/tcp,*:53->53/udp`); ingress ports belong to the
/// mesh, not to a task.
pub fn host_ports(s: &ServiceInspect) -> String {
    s.endpoint
        .ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host)
        .map(|p| {
            let proto = match p.protocol {
                crate::wire::Protocol::Tcp => "tcp",
                crate::wire::Protocol::Udp => "udp",
            };
            format!("*:{}->{}/{proto}", p.published_port, p.target_port)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A `service ps` row: `history` is a slot's older task (the table
/// indents it); `ports` are its service's host-mode ports.
pub fn task_row(t: &TaskInspect, ports: &str, no_trunc: bool, now_ms: u64) -> TaskRow {
    let name = if t.slot == 0 {
        format!("{}.{}", t.service_name, t.node_id.as_deref().unwrap_or(""))
    } else {
        format!("{}.{}", t.service_name, t.slot)
    };
    let since = human_duration(now_ms.saturating_sub(t.status.timestamp_ms));
    let err = t.status.err.clone().unwrap_or_default();
    // A stopped task published nothing any more.
    let live = t.desired_state == crate::wire::DesiredState::Running;
    TaskRow {
        id: if no_trunc {
            t.id.clone()
        } else {
            short_id(&t.id)
        },
        name,
        image: image_of(&t.spec.container_spec.command),
        node: t.node.clone().unwrap_or_default(),
        desired_state: capitalized(t.desired_state.as_str()),
        current_state: format!(
            "{} {} ago",
            capitalized(t.status.state.as_str()),
            since.to_lowercase()
        ),
        // By characters: an error may hold multi-byte text.
        error: if no_trunc || err.chars().count() <= 60 {
            err
        } else {
            format!("\"{}…\"", err.chars().take(59).collect::<String>())
        },
        ports: if live {
            ports.to_string()
        } else {
            String::new()
        },
    }
}

/// `service ps` rows in the API's order (per slot the current task, then
/// its history): each with whether it is history.
pub fn task_rows(
    tasks: &[TaskInspect],
    ports: &BTreeMap<String, String>,
    no_trunc: bool,
    now_ms: u64,
) -> Vec<(TaskRow, bool)> {
    let mut seen = BTreeSet::new();
    tasks
        .iter()
        .map(|t| {
            let ports = ports.get(&t.service_id).map(String::as_str).unwrap_or("");
            let row = task_row(t, ports, no_trunc, now_ms);
            let history = !seen.insert(row.name.clone());
            (row, history)
        })
        .collect()
}

/// `service ps` / `stack ps`: `ports` by service id.
pub fn print_tasks(
    tasks: &[TaskInspect],
    ports: &BTreeMap<String, String>,
    no_trunc: bool,
    format: Format,
) -> anyhow::Result<()> {
    let rows = task_rows(tasks, ports, no_trunc, crate::clock::now_ms());
    if format == Format::Json {
        // Docker indents only its table: JSON rows keep the plain name.
        let rows: Vec<TaskRow> = rows.into_iter().map(|(r, _)| r).collect();
        return print_rows(&rows);
    }
    let t: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(r, history)| {
            vec![
                r.id,
                if history {
                    format!(" \\_ {}", r.name)
                } else {
                    r.name
                },
                r.node,
                r.desired_state,
                r.current_state,
                r.error,
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &t,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn task(slot: u64, desired: DesiredState, state: TaskState, at: u64) -> TaskInspect {
        serde_json::from_value(serde_json::json!({
            "ID": format!("task{slot}{at}abcdefghijklmnopq"),
            "Name": format!("web.{slot}.x"),
            "ServiceID": "svc1",
            "ServiceName": "web",
            "Slot": slot,
            "NodeID": "nodeid1",
            "Node": "n1",
            "DesiredState": desired,
            "Status": {
                "State": state,
                "Timestamp": "",
                "TimestampMs": at,
                "Err": null,
                "ContainerStatus": {"ExitCode": null},
            },
            "CreatedAt": "",
            "Spec": {"ContainerSpec": {"Command": ["/usr/bin/shoal", "whoami"], "Env": []}},
            "NetworksAttachments": [],
        }))
        .unwrap()
    }

    #[test]
    fn human_durations_are_dockers() {
        let s = 1000;
        let h = 3600 * s;
        for (ms, want) in [
            (0, "Less than a second"),
            (999, "Less than a second"),
            (s, "1 second"),
            (5 * s, "5 seconds"),
            (59 * s, "59 seconds"),
            (60 * s, "About a minute"),
            (119 * s, "About a minute"),
            (120 * s, "2 minutes"),
            (59 * 60 * s, "59 minutes"),
            (h, "About an hour"),
            (h + h / 2 - 1, "About an hour"),
            (h + h / 2, "2 hours"),
            (47 * h, "47 hours"),
            (48 * h, "2 days"),
            (14 * 24 * h, "2 weeks"),
            (60 * 24 * h, "2 months"),
            (3 * 365 * 24 * h, "3 years"),
        ] {
            assert_eq!(human_duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn a_task_becomes_dockers_row() {
        let now = 1_000_000;
        let mut t = task(1, DesiredState::Running, TaskState::Running, now - 5_300);
        let ports = "*:8080->80/tcp".to_string();
        let r = task_row(&t, &ports, false, now);
        assert_eq!(
            r,
            TaskRow {
                id: "task1994700a".into(),
                name: "web.1".into(),
                image: "shoal".into(),
                node: "n1".into(),
                desired_state: "Running".into(),
                current_state: "Running 5 seconds ago".into(),
                error: "".into(),
                ports: ports.clone(),
            }
        );
        // Docker's JSON names.
        let j = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CurrentState",
                "DesiredState",
                "Error",
                "ID",
                "Image",
                "Name",
                "Node",
                "Ports"
            ]
        );
        assert_eq!(task_row(&t, "", true, now).id, t.id);

        // A stopped task with a long error: cut at 60 characters, no ports.
        t.desired_state = DesiredState::Shutdown;
        t.status.state = TaskState::Rejected;
        t.status.timestamp_ms = now - 200;
        t.status.err = Some(format!("cannot start \"prog\": {}", "é".repeat(80)));
        let r = task_row(&t, &ports, false, now);
        assert_eq!(r.desired_state, "Shutdown");
        assert_eq!(r.current_state, "Rejected less than a second ago");
        assert_eq!(r.error.chars().count(), 62, "{}", r.error);
        assert!(r.error.starts_with("\"cannot start") && r.error.ends_with("…\""));
        assert_eq!(r.ports, "");
        assert_eq!(
            task_row(&t, &ports, true, now).error,
            t.status.err.clone().unwrap()
        );

        // A global task is named by its node's id.
        t.slot = 0;
        assert_eq!(task_row(&t, "", false, now).name, "web.nodeid1");
    }

    #[test]
    fn history_follows_its_slot() {
        let now = 10_000_000;
        let tasks = [
            task(1, DesiredState::Running, TaskState::Running, now),
            task(1, DesiredState::Shutdown, TaskState::Failed, now - 1),
            task(2, DesiredState::Running, TaskState::Pending, now),
        ];
        let rows = task_rows(&tasks, &BTreeMap::new(), false, now);
        let names: Vec<(&str, bool)> = rows.iter().map(|(r, h)| (r.name.as_str(), *h)).collect();
        assert_eq!(names, [("web.1", false), ("web.1", true), ("web.2", false)]);
    }
}
