//! Many job files on overlapping keys with several workers: no torn
//! multi-key writes, the final table is the union of the last writes, and
//! backups taken meanwhile are each a consistent SHOW.

mod common;

use common::*;
use kvs::backup::Backups;
use kvs::jobs::run_folder;
use kvs::store::Store;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::Arc;

const GROUP: usize = 10;
const ROUNDS: usize = 150;

/// Job `i`: every round writes the whole shared group with one value, its
/// own key, and reads the group back.
fn write_jobs(dir: &Path, jobs: usize, backups_in: Option<usize>) {
    let group: Vec<String> = (0..GROUP).map(|g| format!("g{g}")).collect();
    for i in 0..jobs {
        let mut job = String::new();
        for n in 0..ROUNDS {
            job.push_str("WRITE [");
            for k in &group {
                write!(job, "({k},j{i}-{n})").unwrap();
            }
            job.push_str("]\n");
            writeln!(job, "WRITE [(own{i},{n})]").unwrap();
            writeln!(job, "READ [{}]", group.join(",")).unwrap();
            if backups_in == Some(i) {
                job.push_str("BACKUP\n");
            }
        }
        fs::write(dir.join(format!("job{i:02}.job")), job).unwrap();
    }
}

/// The values inside a READ line `[(k,v)(k,v)...]`.
fn read_values(line: &str) -> Vec<&str> {
    line.trim_start_matches("[(")
        .trim_end_matches(")]")
        .split(")(")
        .map(|kv| kv.split_once(',').expect("key,value").1)
        .collect()
}

#[test]
fn readers_never_see_half_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    write_jobs(tmp.path(), 8, None);
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "4"]);
    assert!(out.status.success(), "{}", out.stderr);
    for i in 0..8 {
        let text = fs::read_to_string(tmp.path().join(format!("job{i:02}.out"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), ROUNDS);
        for line in lines {
            let vals = read_values(line);
            assert_eq!(vals.len(), GROUP);
            assert!(vals.iter().all(|v| *v == vals[0]), "torn read: {line}");
        }
    }
}

#[test]
fn final_table_is_the_union_of_last_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = 12;
    write_jobs(tmp.path(), jobs, None);
    let store = Arc::new(Store::new());
    let backups = Backups::new(1);
    let report = run_folder(
        tmp.path(),
        &store,
        &backups,
        4,
        &kvs::jobs::progress::Progress::hidden(),
    )
    .unwrap();
    assert_eq!(report.jobs, jobs);
    assert_eq!(report.failed_jobs, 0);
    let snap = store.snapshot();
    assert_eq!(snap.len(), GROUP + jobs);
    let last = format!("{}", ROUNDS - 1);
    let mut group_values = Vec::new();
    for (k, v) in snap.pairs() {
        if k.starts_with(b"own") {
            assert_eq!(v, last.as_bytes(), "{k:?}");
        } else {
            group_values.push(v.clone());
        }
    }
    // All group keys hold one job's last write.
    assert!(group_values.iter().all(|v| v == &group_values[0]));
    assert!(
        group_values[0].ends_with(format!("-{last}").as_bytes()),
        "{group_values:?}"
    );
}

/// Checks that `text` is a well-formed SHOW of a consistent table.
fn assert_consistent_show(name: &str, text: &str) {
    let mut keys = Vec::new();
    let mut group = Vec::new();
    for line in text.lines() {
        let inner = line
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        let (k, v) = inner.split_once(", ").expect("key, value");
        if k.starts_with('g') {
            group.push(v.to_owned());
        }
        keys.push(k.to_owned());
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{name}: not sorted");
    assert!(
        group.iter().all(|v| v == &group[0]),
        "{name}: torn snapshot"
    );
}

fn backups_under_writers(max_backups: &str) {
    let tmp = tempfile::tempdir().unwrap();
    write_jobs(tmp.path(), 6, Some(0));
    let dir = tmp.path().to_str().unwrap().to_owned();
    let out = run_kvs(&[&dir, max_backups, "4"]);
    assert!(out.status.success(), "{}", out.stderr);
    let bcks = files_ending(tmp.path(), ".bck");
    assert_eq!(bcks.len(), ROUNDS, "{bcks:?}");
    for n in 1..=ROUNDS {
        let name = format!("job00-{n}.bck");
        let text = fs::read_to_string(tmp.path().join(&name)).expect(&name);
        assert_consistent_show(&name, &text);
        // job00 wrote own0 = n-1 just before its n-th BACKUP.
        assert!(text.contains(&format!("(own0, {})\n", n - 1)), "{name}");
    }
    assert!(files_ending(tmp.path(), ".tmp").is_empty());
    // Every backup child was reaped before kvs exited.
    assert_eq!(processes_mentioning(&dir), Vec::<u32>::new());
}

#[test]
fn backups_are_consistent_with_one_child_at_a_time() {
    backups_under_writers("1");
}

#[test]
fn backups_are_consistent_with_many_children() {
    backups_under_writers("8");
}
