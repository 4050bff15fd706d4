//! The store and a model agree: random sequences of Redis's string and key
//! commands, run by the store (as the server runs them) and by a plain map
//! of bytes to bytes written here, give the same replies and leave the
//! same pairs. And counters raced by many threads lose no increment.

use kvs::reactor::command::{execute, Command, Pairs, Reply};
use kvs::reactor::expire::{ExpireIf, SetTtl, TtlQuery, When};
use kvs::reactor::strings::StringOp;
use kvs::store::Store;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Each key's value and deadline (Unix ms), if it has one.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Deadlines far enough ahead that none passes while a case runs, and one
/// long past: the model needs no clock.
const FAR: i64 = 4_000_000_000_000;
const PAST: i64 = 1_000;

fn deadline() -> impl Strategy<Value = i64> {
    prop_oneof![Just(PAST), (0i64..5).prop_map(|d| FAR + d)]
}

/// Keys from a small set, so that commands meet each other's keys.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"c".to_vec()),
        Just(b"".to_vec())
    ]
}

/// Values: numbers (so counters have something to count), text with the
/// bytes the course formats forbid, and binary.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (-1000i64..1000).prop_map(|n| n.to_string().into_bytes()),
        "[a-z ,()\\[\\]]{0,8}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| Command::Set {
            key,
            value: value.into(),
            cond: kvs::store::SetIf::Always,
            reply: kvs::reactor::command::SetReply::Ok
        }),
        key().prop_map(Command::Get),
        (key(), -50i64..50).prop_map(|(key, by)| Command::Update {
            key,
            op: StringOp::IncrBy(by)
        }),
        (key(), value()).prop_map(|(key, v)| Command::Update {
            key,
            op: StringOp::Append(v)
        }),
        (key(), 0u64..8, value()).prop_map(|(key, at, v)| Command::Update {
            key,
            op: StringOp::SetRange(at, v)
        }),
        key().prop_map(|key| Command::Update {
            key,
            op: StringOp::GetDel
        }),
        (key(), -6i64..6, -6i64..6).prop_map(|(key, start, end)| Command::GetRange {
            key,
            start,
            end
        }),
        (key(), key(), any::<bool>()).prop_map(|(from, to, nx)| Command::Rename { from, to, nx }),
        (key(), key(), any::<bool>()).prop_map(|(from, to, replace)| Command::Copy {
            from,
            to,
            replace
        }),
        prop::collection::vec((key(), value()), 1..4).prop_map(|p| {
            let mut pairs = Pairs::default();
            for (k, v) in &p {
                pairs.push(k, v);
            }
            Command::MSetNx(pairs)
        }),
        prop::collection::vec(key(), 1..4).prop_map(Command::Del),
        (key(), deadline(), any::<[bool; 4]>()).prop_map(|(key, at, [nx, xx, gt, lt])| {
            // Only combinations Redis accepts.
            let cond = ExpireIf {
                nx: nx && !(xx || gt || lt),
                xx,
                gt: gt && !lt,
                lt,
            };
            Command::Expire {
                key,
                when: When::At(at),
                cond,
            }
        }),
        key().prop_map(|key| Command::Ttl {
            key,
            query: TtlQuery {
                millis: true,
                absolute: true
            }
        }),
        key().prop_map(Command::Persist),
        (
            key(),
            value(),
            prop::option::of((FAR..FAR + 5).prop_map(When::At))
        )
            .prop_map(|(key, value, at)| Command::SetTtl {
                key,
                value: value.into(),
                cond: kvs::store::SetIf::Always,
                reply: kvs::reactor::command::SetReply::Ok,
                ttl: at.map_or(SetTtl::Keep, SetTtl::Set),
            }),
    ]
}

/// What Redis does, written out plainly.
fn model(m: &mut Model, cmd: &Command) -> Reply {
    let int = |v: Option<&(Vec<u8>, Option<u64>)>| -> Option<i64> {
        let Some((v, _)) = v else { return Some(0) };
        let s = std::str::from_utf8(v).ok()?;
        let n: i64 = s.parse().ok()?;
        // Redis's form only: no sign, no leading zeros, no "-0".
        (n.to_string() == s).then_some(n)
    };
    match cmd {
        Command::Set { key, value, .. } => {
            m.insert(key.clone(), (value.to_vec(), None));
            Reply::Ok
        }
        Command::SetTtl {
            key, value, ttl, ..
        } => {
            let keep = m.get(key).and_then(|(_, t)| *t);
            let t = match ttl {
                SetTtl::Keep => keep,
                SetTtl::Set(When::At(at)) => Some(*at as u64),
                SetTtl::Set(When::In(_)) => unreachable!("not generated"),
            };
            m.insert(key.clone(), (value.to_vec(), t));
            Reply::Ok
        }
        Command::Get(k) => Reply::Value(m.get(k).map(|(v, _)| v.clone())),
        Command::Expire { key, when, cond } => {
            let When::At(at) = *when else {
                unreachable!("not generated")
            };
            let Some((_, current)) = m.get(key) else {
                return Reply::Int(0);
            };
            let current = current.map(|c| c as i64);
            let ok = (!cond.nx || current.is_none())
                && (!cond.xx || current.is_some())
                && (!cond.gt || current.is_some_and(|c| at > c))
                && (!cond.lt || current.is_none_or(|c| at < c));
            if !ok {
                return Reply::Int(0);
            }
            if at == PAST {
                m.remove(key);
            } else if let Some(e) = m.get_mut(key) {
                e.1 = Some(at as u64);
            }
            Reply::Int(1)
        }
        Command::Ttl { key, .. } => Reply::Int(match m.get(key) {
            None => -2,
            Some((_, None)) => -1,
            Some((_, Some(at))) => *at as i64,
        }),
        Command::Persist(key) => match m.get_mut(key) {
            Some((_, t @ Some(_))) => {
                *t = None;
                Reply::Int(1)
            }
            _ => Reply::Int(0),
        },
        Command::Update { key, op } => match op {
            StringOp::IncrBy(by) => match int(m.get(key)).map(|n| n.checked_add(*by)) {
                None => Reply::Error("ERR value is not an integer or out of range".into()),
                Some(None) => Reply::Error("ERR increment or decrement would overflow".into()),
                Some(Some(n)) => {
                    // A counter keeps its deadline.
                    let t = m.get(key).and_then(|(_, t)| *t);
                    m.insert(key.clone(), (n.to_string().into_bytes(), t));
                    Reply::Int(n)
                }
            },
            StringOp::Append(v) => {
                let e = &mut m.entry(key.clone()).or_default().0;
                e.extend_from_slice(v);
                Reply::Int(e.len() as i64)
            }
            StringOp::SetRange(at, v) => {
                let at = *at as usize;
                if v.is_empty() {
                    return Reply::Int(m.get(key).map_or(0, |(v, _)| v.len()) as i64);
                }
                let e = &mut m.entry(key.clone()).or_default().0;
                if e.len() < at + v.len() {
                    e.resize(at + v.len(), 0);
                }
                e[at..at + v.len()].copy_from_slice(v);
                Reply::Int(e.len() as i64)
            }
            StringOp::GetDel => Reply::Value(m.remove(key).map(|(v, _)| v)),
            StringOp::IncrByFloat(_) | StringOp::SetBit(..) => unreachable!("not generated"),
        },
        Command::GetRange { key, start, end } => {
            let v = m.get(key).map(|(v, _)| v.clone()).unwrap_or_default();
            let len = v.len() as i64;
            let (mut s, mut e) = (*start, *end);
            if s < 0 && e < 0 && s > e {
                return Reply::Value(Some(Vec::new()));
            }
            if s < 0 {
                s += len;
            }
            if e < 0 {
                e += len;
            }
            s = s.max(0);
            e = e.max(0).min(len - 1);
            if s > e || len == 0 {
                return Reply::Value(Some(Vec::new()));
            }
            Reply::Value(Some(v[s as usize..=e as usize].to_vec()))
        }
        Command::Rename { from, to, nx } => {
            let Some(v) = m.get(from).cloned() else {
                return Reply::Error("ERR no such key".into());
            };
            if from == to {
                return if *nx { Reply::Int(0) } else { Reply::Ok };
            }
            if *nx && m.contains_key(to) {
                return Reply::Int(0);
            }
            // The deadline goes with the value.
            m.remove(from);
            m.insert(to.clone(), v);
            if *nx {
                Reply::Int(1)
            } else {
                Reply::Ok
            }
        }
        Command::Copy { from, to, replace } => {
            if from == to {
                return Reply::Error("ERR source and destination objects are the same".into());
            }
            match m.get(from).cloned() {
                Some(v) if *replace || !m.contains_key(to) => {
                    m.insert(to.clone(), v);
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            }
        }
        Command::MSetNx(pairs) => {
            if pairs.iter().any(|(k, _)| m.contains_key(k)) {
                return Reply::Int(0);
            }
            for (k, v) in pairs.iter() {
                m.insert(k.to_vec(), (v.to_vec(), None));
            }
            Reply::Int(1)
        }
        Command::Del(keys) => {
            Reply::Int(keys.iter().filter(|k| m.remove(*k).is_some()).count() as i64)
        }
        other => unreachable!("not generated: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_store_does_what_the_model_does(cmds in prop::collection::vec(command(), 1..40)) {
        let store = Store::new();
        let mut m = Model::new();
        for cmd in cmds {
            let want = model(&mut m, &cmd);
            let got = execute(&store, cmd.clone());
            prop_assert_eq!(got, want, "{:?}", cmd);
        }
        let snap = store.snapshot();
        let deadlines: BTreeMap<_, _> = snap.deadlines().iter().cloned().collect();
        let pairs: Model = snap
            .pairs()
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), deadlines.get(k).copied())))
            .collect();
        prop_assert_eq!(pairs, m);
    }
}

#[test]
fn counters_raced_by_many_threads_lose_nothing() {
    let store = Arc::new(Store::new());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let incr = Command::Update {
                        key: b"n".to_vec(),
                        op: StringOp::IncrBy(1),
                    };
                    assert!(matches!(execute(&store, incr), Reply::Int(_)));
                    // A different kind of change to the same key, between.
                    if i % 100 == 0 {
                        let append = Command::Update {
                            key: format!("log{t}").into_bytes(),
                            op: StringOp::Append(b"x".to_vec()),
                        };
                        execute(&store, append);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.get("n").as_deref(), Some(&b"16000"[..]));
    for t in 0..8 {
        assert_eq!(store.get(format!("log{t}")).map(|v| v.len()), Some(20));
    }
}
