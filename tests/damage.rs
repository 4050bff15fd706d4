//! The damage harness: a small data dir (a snapshot of two records, a
//! sealed segment and a last segment) damaged in every way a disk, a crash
//! or a person can, each case run through the real binary. Each must end
//! as one of: loads exactly the last state (a torn tail), or refuses
//! naming the file and the offset; then `--repair` starts, keeps every
//! record before the damage, and leaves a dir the next plain start loads
//! without a word of damage. Never exit 0 with less, never a hang (every
//! run is bounded).

mod common;

use common::run_kvs;
use kvs::persist::format::{self, HEADER_LEN};
use std::collections::BTreeMap;
use std::path::Path;

const DIR_ID: u64 = 0x6b76_735f_7465_7374;

type State = BTreeMap<String, String>;

/// One record as written: its file, where it is, and the state once it
/// and everything before it (in load order) is applied.
struct Unit {
    file: usize,
    start: usize,
    end: usize,
    after: State,
    /// What the record changes, to apply it on another state.
    change: Change,
}

#[derive(Clone)]
enum Change {
    Set(Vec<(String, String)>),
    Del(Vec<String>),
    None,
}

impl Change {
    fn apply(&self, s: &mut State) {
        match self {
            Change::Set(p) => {
                for (k, v) in p {
                    s.insert(k.clone(), v.clone());
                }
            }
            Change::Del(keys) => {
                for k in keys {
                    s.remove(k);
                }
            }
            Change::None => {}
        }
    }
}

/// The dir's files and their records.
struct Fixture {
    names: [&'static str; 3],
    files: [Vec<u8>; 3],
    units: Vec<Unit>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut files = [
            format::header(format::SNAPSHOT_MAGIC, DIR_ID, 1).to_vec(),
            format::header(format::LOG_MAGIC, DIR_ID, 1).to_vec(),
            format::header(format::LOG_MAGIC, DIR_ID, 2).to_vec(),
        ];
        let mut units = Vec::new();
        let mut state = State::new();
        let mut push = |files: &mut [Vec<u8>; 3], file: usize, change: Change| {
            let start = files[file].len();
            let out = &mut files[file];
            match &change {
                Change::Set(p) => {
                    format::push_set(out, p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
                }
                Change::Del(k) => format::push_del(out, k.iter().map(String::as_bytes)),
                Change::None if file == 0 => format::push_end(out, 6),
                Change::None => format::push_seal(out, 2),
            }
            change.apply(&mut state);
            units.push(Unit {
                file,
                start,
                end: files[file].len(),
                after: state.clone(),
                change,
            });
        };
        let pairs = |r: std::ops::Range<u32>, tag: &str| {
            Change::Set(r.map(|i| (format!("k{i}"), format!("{tag}{i}"))).collect())
        };
        // The snapshot: six pairs in two records, and its end.
        push(&mut files, 0, pairs(0..3, "s"));
        push(&mut files, 0, pairs(3..6, "s"));
        push(&mut files, 0, Change::None);
        // log-1: changes, then the seal naming log-2.
        push(&mut files, 1, pairs(0..2, "a"));
        push(&mut files, 1, Change::Del(vec!["k3".into()]));
        push(&mut files, 1, pairs(6..9, "a"));
        push(&mut files, 1, pairs(1..2, "b"));
        push(&mut files, 1, Change::Del(vec!["k7".into(), "k8".into()]));
        push(&mut files, 1, Change::None);
        // log-2, the last.
        push(&mut files, 2, pairs(9..11, "c"));
        push(&mut files, 2, pairs(0..1, "c"));
        push(&mut files, 2, Change::Del(vec!["k5".into()]));
        push(&mut files, 2, pairs(11..14, "c"));
        push(&mut files, 2, pairs(2..3, "d"));
        Fixture {
            names: ["snapshot-1.kvs", "log-1.kvs", "log-2.kvs"],
            files,
            units,
        }
    }

    fn last(&self) -> &State {
        &self.units.last().expect("records").after
    }

    /// The state of every record before unit `u`.
    fn before(&self, u: usize) -> State {
        if u == 0 {
            State::new()
        } else {
            self.units[u - 1].after.clone()
        }
    }

    /// The state of every record before file `f`'s first.
    fn before_file(&self, f: usize) -> State {
        let first = self.units.iter().position(|u| u.file == f).expect("a unit");
        self.before(first)
    }

    /// The record of file `f` holding byte `at` (`None`: the header).
    fn unit_at(&self, f: usize, at: usize) -> Option<usize> {
        self.units
            .iter()
            .position(|u| u.file == f && u.start <= at && at < u.end)
    }

    /// What `--repair` must keep after damage to record `u`: for a
    /// snapshot record, everything but its own pairs (pairs of a snapshot
    /// are independent); for a log record, everything before it.
    fn kept(&self, u: usize) -> State {
        if self.units[u].file != 0 {
            return self.before(u);
        }
        let mut s = State::new();
        for (i, unit) in self.units.iter().enumerate() {
            if i != u {
                unit.change.apply(&mut s);
            }
        }
        s
    }

    fn write(&self, dir: &Path, files: &[Vec<u8>; 3]) {
        for (name, bytes) in self.names.iter().zip(files) {
            std::fs::write(dir.join(name), bytes).expect("write a data file");
        }
    }
}

fn show_text(s: &State) -> String {
    s.iter().map(|(k, v)| format!("({k}, {v})\n")).collect()
}

/// Runs batch mode with a SHOW job on `dir`.
fn show(dir: &Path, repair: bool) -> (Option<i32>, String, String) {
    let jobs = tempfile::tempdir().expect("tempdir");
    std::fs::write(jobs.path().join("s.job"), "SHOW\n").expect("job");
    let mut args = vec![
        jobs.path().to_str().expect("utf-8"),
        "1",
        "1",
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ];
    if repair {
        args.push("--repair");
    }
    let out = run_kvs(&args);
    let shown = std::fs::read_to_string(jobs.path().join("s.out")).unwrap_or_default();
    (out.status.code(), shown, out.stderr)
}

/// What a case must end as.
enum Expect {
    /// Loads exactly this state (a torn tail, cut off).
    Loads(State),
    /// Refused with a message holding `says`; `--repair` then keeps `kept`.
    Refused { says: String, kept: State },
}

/// Runs one case: `damage` sets up the dir. Returns a failure to report.
fn run_case(what: &str, damage: &dyn Fn(&Path), expect: &Expect) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    damage(dir.path());
    let (code, shown, stderr) = show(dir.path(), false);
    let fail = |why: String| Err(format!("{what}: {why}"));
    match expect {
        Expect::Loads(state) => {
            if code != Some(0) || shown != show_text(state) {
                return fail(format!(
                    "expected to load the last state; exit {code:?}, showed {shown:?}, stderr {stderr}"
                ));
            }
            let (code, again, stderr) = show(dir.path(), false);
            if code != Some(0) || again != shown || stderr.contains("torn") {
                return fail(format!("second start: exit {code:?}: {stderr}"));
            }
        }
        Expect::Refused { says, kept } => {
            if code != Some(1) || !stderr.contains(says.as_str()) {
                return fail(format!(
                    "expected a refusal saying {says:?}; exit {code:?}, showed {shown:?}, stderr {stderr}"
                ));
            }
            let (code, shown, stderr) = show(dir.path(), true);
            if code != Some(0) || shown != show_text(kept) {
                return fail(format!(
                    "--repair: exit {code:?}, showed {shown:?}, wanted {:?}; stderr {stderr}",
                    show_text(kept)
                ));
            }
            let (code, again, stderr) = show(dir.path(), false);
            if code != Some(0) || again != shown || stderr.contains("damaged") {
                return fail(format!(
                    "the start after --repair: exit {code:?}, showed {again:?}: {stderr}"
                ));
            }
        }
    }
    Ok(())
}

/// A small deterministic generator (the cases must be the same each run).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

type Case = (String, Box<dyn Fn(&Path) + Send + Sync>, Expect);

fn flip_case(fx: &std::sync::Arc<Fixture>, f: usize, at: usize, bit: u8) -> Case {
    let (says, kept) = match fx.unit_at(f, at) {
        Some(u) => (
            format!("{} is damaged at byte {}", fx.names[f], fx.units[u].start),
            fx.kept(u),
        ),
        // A damaged header: its file, and what follows it, cannot load.
        None => (
            format!("{} is damaged at byte 0", fx.names[f]),
            if f == 0 {
                State::new()
            } else {
                fx.before_file(f)
            },
        ),
    };
    let fx2 = fx.clone();
    (
        format!("bit {bit} of byte {at} of {}", fx.names[f]),
        Box::new(move |dir: &Path| {
            let mut files = fx2.files.clone();
            files[f][at] ^= 1 << bit;
            fx2.write(dir, &files);
        }),
        Expect::Refused { says, kept },
    )
}

fn cases(fx: &std::sync::Arc<Fixture>) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    // Every bit of every record's frame.
    for u in &fx.units {
        for at in u.start..u.start + format::FRAME_LEN {
            for bit in 0..8 {
                cases.push(flip_case(fx, u.file, at, bit));
            }
        }
    }
    // Two bits of every byte of every file header.
    for f in 0..3 {
        for at in 0..HEADER_LEN {
            for bit in [0, 7] {
                cases.push(flip_case(fx, f, at, bit));
            }
        }
    }
    // Random payload flips.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let u = &fx.units[rng.next() as usize % fx.units.len()];
        let payload = u.start + format::FRAME_LEN..u.end;
        let at = payload.start + rng.next() as usize % payload.len();
        cases.push(flip_case(fx, u.file, at, (rng.next() % 8) as u8));
    }
    // Truncation at every offset of the last two records: a torn tail.
    let last = &fx.files[2];
    let n = fx.units.len();
    for cut in fx.units[n - 2].start..last.len() {
        let whole = fx
            .units
            .iter()
            .rposition(|u| u.file == 2 && u.end <= cut)
            .expect("a whole record");
        let fx2 = fx.clone();
        cases.push((
            format!("log-2.kvs cut at {cut}"),
            Box::new(move |dir: &Path| {
                let mut files = fx2.files.clone();
                files[2].truncate(cut);
                fx2.write(dir, &files);
            }),
            Expect::Loads(fx.units[whole].after.clone()),
        ));
    }
    // Zeros: over the last record (what ext4 can leave), after it, and in
    // the middle of each segment (records follow, so it is damage).
    let zero =
        |name: &str, f: usize, range: std::ops::Range<usize>, grow: usize, expect: Expect| {
            let fx2 = fx.clone();
            let case: Case = (
                format!("{name}: zeros at {range:?} and {grow} more"),
                Box::new(move |dir: &Path| {
                    let mut files = fx2.files.clone();
                    files[f][range.clone()].fill(0);
                    files[f].extend(std::iter::repeat_n(0, grow));
                    fx2.write(dir, &files);
                }),
                expect,
            );
            case
        };
    let last_unit = &fx.units[n - 1];
    cases.push(zero(
        "log-2.kvs",
        2,
        last_unit.start..last_unit.end,
        0,
        Expect::Loads(fx.before(n - 1)),
    ));
    cases.push(zero(
        "log-2.kvs",
        2,
        last.len()..last.len(),
        4096,
        Expect::Loads(fx.last().clone()),
    ));
    for (f, u) in [(1, 4), (2, n - 4)] {
        let unit = &fx.units[u];
        cases.push(zero(
            fx.names[f],
            f,
            unit.start + 3..unit.end + 5,
            0,
            Expect::Refused {
                says: format!("{} is damaged at byte {}", fx.names[f], unit.start),
                kept: fx.before(u),
            },
        ));
    }
    // Garbage after the last record, and after the seal.
    for f in [1, 2] {
        let fx2 = fx.clone();
        let at = fx.files[f].len();
        cases.push((
            format!("garbage appended to {}", fx.names[f]),
            Box::new(move |dir: &Path| {
                let mut files = fx2.files.clone();
                let mut rng = XorShift(77);
                files[f].extend((0..100).map(|_| rng.next() as u8));
                fx2.write(dir, &files);
            }),
            Expect::Refused {
                says: format!("{} is damaged at byte {at}", fx.names[f]),
                // After log-1's seal, log-2 follows the damage.
                kept: if f == 1 {
                    fx.before_file(2)
                } else {
                    fx.last().clone()
                },
            },
        ));
    }
    // Each file missing, or replaced by a FIFO, a folder or a symlink.
    for f in 0..3 {
        let (missing, kept) = match f {
            0 => ("snapshot-1.kvs is missing", State::new()),
            1 => ("log-1.kvs is missing", fx.before_file(1)),
            _ => ("log-2.kvs is missing", fx.before_file(2)),
        };
        let kept_here = if f == 0 {
            State::new()
        } else {
            fx.before_file(f)
        };
        type Replace = fn(&Path);
        let replacements: [(&str, &str, Replace); 5] = [
            ("removed", missing, |_| {}),
            ("a FIFO", "is a FIFO", |p| common::mkfifo(p)),
            ("a folder", "is a directory", |p| {
                std::fs::create_dir(p).expect("mkdir")
            }),
            ("a link to /dev/zero", "is a symbolic link", |p| {
                std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")
            }),
            ("a link to a copy", "is a symbolic link", |p| {
                let copy = p.with_extension("kvs.copy");
                std::fs::write(&copy, b"").expect("copy");
                std::os::unix::fs::symlink(&copy, p).expect("symlink")
            }),
        ];
        for (how, says, replace) in replacements {
            let fx2 = fx.clone();
            let kept = if how == "removed" {
                kept.clone()
            } else {
                kept_here.clone()
            };
            cases.push((
                format!("{} {how}", fx.names[f]),
                Box::new(move |dir: &Path| {
                    fx2.write(dir, &fx2.files);
                    let path = dir.join(fx2.names[f]);
                    std::fs::remove_file(&path).expect("remove");
                    replace(&path);
                }),
                Expect::Refused {
                    says: says.to_string(),
                    kept,
                },
            ));
        }
    }
    cases
}

#[test]
fn every_kind_of_damage_loads_the_last_state_or_is_refused_and_repaired() {
    let fx = std::sync::Arc::new(Fixture::new());
    // The fixture as written loads whole.
    let whole = run_case(
        "the undamaged dir",
        &|dir: &Path| fx.write(dir, &fx.files),
        &Expect::Loads(fx.last().clone()),
    );
    assert_eq!(whole, Ok(()));
    let cases = cases(&fx);
    let total = cases.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((what, damage, expect)) = cases.get(i) else {
                    return;
                };
                if let Err(why) = run_case(what, damage.as_ref(), expect) {
                    failures.lock().expect("lock").push(why);
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    eprintln!("damage harness: {total} cases, each refused or loaded whole as it must");
}

#[test]
fn version_1_dirs_still_load_and_move_on_to_version_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut snap = format::header_v1(format::SNAPSHOT_MAGIC).to_vec();
    format::v1::push_set(&mut snap, &[("a", "1"), ("b", "2")]);
    format::v1::push_end(&mut snap, 2);
    let mut log = format::header_v1(format::LOG_MAGIC).to_vec();
    format::v1::push_set(&mut log, &[("c", "3")]);
    format::v1::push_del(&mut log, &["a"]);
    std::fs::write(dir.path().join("snapshot-1.kvs"), &snap).expect("write");
    std::fs::write(dir.path().join("log-1.kvs"), &log).expect("write");
    let (code, shown, stderr) = show(dir.path(), false);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(shown, "(b, 2)\n(c, 3)\n");
    assert!(stderr.contains("version 1 files"), "{stderr}");
    // The old segment is left as it was; new changes go to a new one.
    assert_eq!(
        std::fs::read(dir.path().join("log-1.kvs")).expect("log"),
        log
    );
    let new = std::fs::read(dir.path().join("log-2.kvs")).expect("a new segment");
    let header = format::read_header(&new, format::LOG_MAGIC).expect("header");
    assert_eq!(header.version, format::Version::V2);
    assert_eq!(header.generation, Some(2));
    let (code, again, stderr) = show(dir.path(), false);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(again, shown);
}

/// A crash between starting a segment and sealing the one before leaves an
/// unsealed segment and an empty one after it: that loads, and the seal is
/// written then, so what is appended next still loads. An unsealed segment
/// followed by records is refused.
#[test]
fn a_crash_between_a_new_segment_and_its_seal_loads_and_is_mended() {
    let fx = Fixture::new();
    let seal = fx
        .units
        .iter()
        .position(|u| u.file == 1 && matches!(u.change, Change::None))
        .expect("the seal");
    let mut files = fx.files.clone();
    files[1].truncate(fx.units[seal].start);
    files[2].truncate(HEADER_LEN);
    let dir = tempfile::tempdir().expect("tempdir");
    fx.write(dir.path(), &files);
    let (code, shown, stderr) = show(dir.path(), false);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(shown, show_text(&fx.before_file(2)));
    assert!(stderr.contains("sealed"), "{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("log-1.kvs")).expect("log-1"),
        fx.files[1],
        "the seal is the one the log would have written"
    );
    // A change appended now, then a plain start.
    let jobs = tempfile::tempdir().expect("tempdir");
    std::fs::write(jobs.path().join("w.job"), "WRITE [(late,1)]\n").expect("job");
    let out = run_kvs(&[
        jobs.path().to_str().expect("utf-8"),
        "1",
        "1",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let (code, shown, stderr) = show(dir.path(), false);
    assert_eq!(code, Some(0), "{stderr}");
    let mut want = fx.before_file(2);
    want.insert("late".into(), "1".into());
    assert_eq!(shown, show_text(&want));

    // Unsealed, with records after it: not a crash kvs can leave.
    let mut files = fx.files.clone();
    files[1].truncate(fx.units[seal].start);
    let dir = tempfile::tempdir().expect("tempdir");
    fx.write(dir.path(), &files);
    let (code, _, stderr) = show(dir.path(), false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not end with the seal"), "{stderr}");
}
