//! A task's log on its node: `DATA_DIR/tasks/ID/log`, written by the task
//! itself (stdout and stderr opened O_APPEND, so the task keeps writing
//! while the agent restarts and needs no relay process).
//!
//! Beside it the runner keeps:
//! - `log.idx`: "LENGTH UNIX_MS" lines, appended whenever it sees the log
//!   grow (every runner pass, 200 ms). A line's timestamp for `service logs
//!   -t` is the first observation that contains all of it: the time the
//!   agent saw it, within one pass (Docker's is the time its copier read
//!   it). Lines written while the agent was away get the time it returned.
//! - `log.gen`: how many times the log was rotated, so a follower's cursor
//!   (generation, offset) stays valid across a rotation.
//!
//! Rotation is logrotate's copytruncate: `log` is copied to `log.1` and
//! truncated in place (the task's O_APPEND writes carry on at the new end).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::wire::{LogAsk, LogCursor, LogLines};

/// A task log is rotated past this size; at most twice this on disk.
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// At most this much log text in one answer (it rides on a heartbeat); the
/// asker gets `more` and asks again from the cursor.
pub const ANSWER_MAX_BYTES: usize = 1 << 20;

fn with_suffix(log: &Path, suffix: &str) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn generation(log: &Path) -> u64 {
    std::fs::read_to_string(with_suffix(log, ".gen"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Records the log's length now if it grew since `last` (the length seen
/// last time); returns the length.
pub fn observe(log: &Path, last: u64, now_ms: u64) -> u64 {
    let Ok(len) = std::fs::metadata(log).map(|m| m.len()) else {
        return last;
    };
    if len > last {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(with_suffix(log, ".idx"))
        {
            let _ = writeln!(f, "{len} {now_ms}");
        }
    }
    len
}

/// Rotates `log` if it outgrew `max` bytes; true if it did.
pub fn rotate(log: &Path, max: u64) -> std::io::Result<bool> {
    if std::fs::metadata(log)?.len() <= max {
        return Ok(false);
    }
    std::fs::copy(log, with_suffix(log, ".1"))?;
    let idx = with_suffix(log, ".idx");
    if idx.exists() {
        std::fs::rename(&idx, with_suffix(log, ".idx.1"))?;
    }
    std::fs::write(
        with_suffix(log, ".gen"),
        format!("{}\n", generation(log) + 1),
    )?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// One file of the log (the rotated part or the live one).
struct Segment {
    gen: u64,
    text: Vec<u8>,
    /// Where the text starts in the file.
    start: u64,
    /// (length, unix ms) observations.
    times: Vec<(u64, u64)>,
}

/// The file from `offset` (clamped to its length): (start, bytes).
fn read_from(path: &Path, offset: u64) -> (u64, Vec<u8>) {
    let mut out = vec![];
    let mut start = 0;
    if let Ok(mut f) = std::fs::File::open(path) {
        start = offset.min(f.metadata().map(|m| m.len()).unwrap_or(0));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut out);
        }
    }
    (start, out)
}

fn read_times(path: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

fn stamp(times: &[(u64, u64)], end: u64, now_ms: u64) -> String {
    let ms = times
        .iter()
        .find(|(len, _)| *len >= end)
        .map_or(now_ms, |(_, t)| *t);
    crate::clock::rfc3339(ms)
}

/// Answers one ask: complete lines only (a partial last line waits for its
/// newline), from the ask's cursor, or the last `tail` lines (0: all)
/// without one; at most `ANSWER_MAX_BYTES` of text.
pub fn answer(log: &Path, ask: &LogAsk, now_ms: u64) -> LogLines {
    let gen = generation(log);
    let old = with_suffix(log, ".1");
    let (old_from, live_from) = match ask.from {
        Some(c) if c.gen == gen => (None, c.offset),
        Some(c) if c.gen + 1 == gen => (Some(c.offset), 0),
        _ => (Some(0), 0),
    };
    let mut segs = vec![];
    if let (Some(off), true) = (old_from, gen > 0) {
        let (start, text) = read_from(&old, off);
        segs.push(Segment {
            gen: gen - 1,
            text,
            start,
            times: read_times(&with_suffix(log, ".idx.1")),
        });
    }
    let (start, text) = read_from(log, live_from);
    segs.push(Segment {
        gen,
        text,
        start,
        times: read_times(&with_suffix(log, ".idx")),
    });

    // Every complete line with its end position: (segment, start, end).
    let mut lines: Vec<(usize, usize, usize)> = vec![];
    for (i, s) in segs.iter().enumerate() {
        let mut at = 0;
        for (j, b) in s.text.iter().enumerate() {
            if *b == b'\n' {
                lines.push((i, at, j + 1));
                at = j + 1;
            }
        }
        // The rotated part is final: its unfinished last line (cut by the
        // copy) is a line too.
        if i + 1 < segs.len() && at < s.text.len() {
            lines.push((i, at, s.text.len() + 1));
        }
    }
    if ask.from.is_none() && ask.tail > 0 {
        let skip = lines.len().saturating_sub(ask.tail as usize);
        lines.drain(..skip);
    }
    let mut out = vec![];
    let mut bytes = 0;
    let last = segs.len() - 1;
    let mut cursor = LogCursor {
        gen,
        offset: segs[last].start,
    };
    let mut more = false;
    for (i, a, b) in lines {
        if bytes + (b - a) > ANSWER_MAX_BYTES && !out.is_empty() {
            more = true;
            break;
        }
        bytes += b - a;
        let s = &segs[i];
        let text = String::from_utf8_lossy(&s.text[a..b - 1]).into_owned();
        let end = s.start + b as u64;
        out.push(if ask.timestamps {
            format!("{} {text}", stamp(&s.times, end, now_ms))
        } else {
            text
        });
        cursor = LogCursor {
            gen: s.gen,
            offset: end,
        };
    }
    if !more && cursor.gen == gen {
        // Past the last complete line of the live part (not past a
        // partial one: it is sent once it ends).
        let complete = segs[last]
            .text
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        cursor.offset = cursor.offset.max(segs[last].start + complete as u64);
    } else if !more {
        cursor = LogCursor {
            gen,
            offset: segs[last].start,
        };
    }
    LogLines {
        id: ask.id,
        task_id: ask.task_id.clone(),
        lines: out,
        cursor,
        more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(tail: u64, from: Option<LogCursor>, timestamps: bool) -> LogAsk {
        LogAsk {
            id: 1,
            task_id: "t".into(),
            tail,
            from,
            timestamps,
        }
    }

    #[test]
    fn tails_follow_across_rotation_and_stamp_lines() {
        let tmp = tempfile::Builder::new()
            .prefix("shoal-log-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let log = dir.join("log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(observe(&log, 0, 1_000), 6);
        assert!(!rotate(&log, 100).unwrap());

        let first = answer(&log, &ask(2, None, false), 5_000);
        assert_eq!(first.lines, vec!["b", "c"]);
        assert_eq!(first.cursor, LogCursor { gen: 0, offset: 6 });

        // A partial line is not sent, and the cursor does not pass it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"d\ne")
            .unwrap();
        observe(&log, 6, 2_000);
        let next = answer(&log, &ask(0, Some(first.cursor), true), 5_000);
        assert_eq!(next.lines, vec!["1970-01-01T00:00:02.000Z d"]);
        assert_eq!(next.cursor, LogCursor { gen: 0, offset: 8 });

        // Rotation: the follower gets the rest of the old part, then the
        // new one, in order.
        assert!(rotate(&log, 3).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(generation(&log), 1);
        std::fs::write(&log, "f\n").unwrap();
        let after = answer(&log, &ask(0, Some(next.cursor), false), 5_000);
        assert_eq!(after.lines, vec!["e", "f"]);
        assert_eq!(after.cursor, LogCursor { gen: 1, offset: 2 });
        // Without a cursor, the tail spans both parts.
        let all = answer(&log, &ask(0, None, false), 5_000);
        assert_eq!(all.lines, vec!["a", "b", "c", "d", "e", "f"]);
        // Nothing new: nothing sent, cursor unchanged.
        let idle = answer(&log, &ask(0, Some(after.cursor), false), 5_000);
        assert!(idle.lines.is_empty());
        assert_eq!(idle.cursor, after.cursor);
    }

    #[test]
    fn big_logs_come_in_pieces() {
        let tmp = tempfile::Builder::new()
            .prefix("shoal-logbig-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let log = dir.join("log");
        let line = "x".repeat(1000) + "\n";
        std::fs::write(&log, line.repeat(3000)).unwrap();
        let mut from = None;
        let mut n = 0;
        for _ in 0..10 {
            let a = answer(&log, &ask(0, from, false), 0);
            n += a.lines.len();
            from = Some(a.cursor);
            if !a.more {
                break;
            }
        }
        assert_eq!(n, 3000);
    }
}
