//! Listings shared by `service` and `stack`: services and tasks as Docker
//! prints them (tables, or one JSON object per line).

use serde_json::Value;

use crate::output::{print_table, Format};

/// `service ls` rows.
pub fn print_services(rows: &[Value], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for r in rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Format::Table => {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        s(&r["ID"]).chars().take(12).collect(),
                        s(&r["Name"]),
                        s(&r["Mode"]),
                        s(&r["Replicas"]),
                        s(&r["Ports"]),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "MODE", "REPLICAS", "PORTS"], &t);
        }
    }
    Ok(())
}

/// `service ps` rows: a slot's older tasks indented under its newest.
pub fn print_tasks(tasks: Vec<&Value>, no_trunc: bool, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        for t in &tasks {
            println!("{}", serde_json::to_string(t)?);
        }
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut rows = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for t in tasks {
        let short = {
            let slot = t["Slot"].as_u64().unwrap_or(0);
            if slot == 0 {
                format!("{}.{}", s(&t["ServiceName"]), s(&t["NodeID"]))
            } else {
                format!("{}.{}", s(&t["ServiceName"]), slot)
            }
        };
        let name = if seen.insert(short.clone()) {
            short
        } else {
            format!(" \\_ {short}")
        };
        let id = s(&t["ID"]);
        let word = super::progress::capitalized(&s(&t["Status"]["State"]));
        let since = t["Status"]["TimestampMs"]
            .as_u64()
            .map(super::progress::ago)
            .unwrap_or_default();
        let err = s(&t["Status"]["Err"]);
        rows.push(vec![
            if no_trunc {
                id
            } else {
                id.chars().take(12).collect()
            },
            name,
            s(&t["Node"]),
            super::progress::capitalized(&s(&t["DesiredState"])),
            format!("{word} {since}"),
            // By characters: an error may hold multi-byte text.
            if no_trunc || err.chars().count() <= 60 {
                err
            } else {
                format!("\"{}…\"", err.chars().take(59).collect::<String>())
            },
        ]);
    }
    print_table(
        &[
            "ID",
            "NAME",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    );
    Ok(())
}
