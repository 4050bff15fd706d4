//! INFO's `commandstats` and `errorstats`, as Redis keeps them: per command
//! (a container's subcommand by its full name, `client|list`) how many
//! calls ran, the microseconds they took, how many were refused before
//! running (a wrong argument count) and how many answered an error; and
//! per error code (`ERR`, `WRONGTYPE`, ...) how many replies carried it,
//! refused or not. CONFIG RESETSTAT clears both.

use super::command_table::{find_index, COMMANDS};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    calls: u64,
    usec: u64,
    rejected: u64,
    failed: u64,
}

impl Counts {
    fn add(&mut self, usec: u64, failed: bool) {
        self.calls += 1;
        self.usec += usec;
        self.failed += u64::from(failed);
    }
}

#[derive(Debug)]
pub struct CommandStats {
    /// A command of the table, by its place in [`COMMANDS`]: every
    /// pipelined request is counted here, and two look-ups of its name in
    /// a map of strings per request were 2% of the server's time.
    table: Vec<Counts>,
    /// Subcommands (`client|list`), by full name.
    commands: BTreeMap<String, Counts>,
    errors: BTreeMap<String, u64>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            table: vec![Counts::default(); COMMANDS.len()],
            commands: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
}

/// `name`'s entry, made on its first use: a call of a command seen before
/// (nearly every call) allocates nothing.
fn counts<'m, V: Default>(map: &'m mut BTreeMap<String, V>, name: &str) -> &'m mut V {
    if !map.contains_key(name) {
        map.insert(name.to_owned(), V::default());
    }
    map.get_mut(name).expect("inserted just above")
}

/// An error reply's code: its first word (`ERR`, `NOAUTH`, ...).
fn code(error: &str) -> &str {
    error.split(' ').next().unwrap_or(error)
}

impl CommandStats {
    /// `name`'s counts: the table's entry for a command of the table.
    fn entry(&mut self, name: &str) -> &mut Counts {
        match find_index(name) {
            Some(i) => &mut self.table[i],
            None => counts(&mut self.commands, name),
        }
    }

    /// A call of `name` ran for `usec`, answering `error` if it failed.
    pub fn ran(&mut self, name: &str, usec: u64, error: Option<&str>) {
        self.entry(name).add(usec, error.is_some());
        self.count_error(error);
    }

    /// [`CommandStats::ran`] for the command at `index` in [`COMMANDS`].
    pub fn ran_at(&mut self, index: usize, usec: u64, error: Option<&str>) {
        if let Some(c) = self.table.get_mut(index) {
            c.add(usec, error.is_some());
            self.count_error(error);
        }
    }

    fn count_error(&mut self, error: Option<&str>) {
        if let Some(e) = error {
            *counts(&mut self.errors, code(e)) += 1;
        }
    }

    /// A call refused before it ran (`name`: `None` for an unknown
    /// command, which has no entry of its own).
    pub fn rejected(&mut self, name: Option<&str>, error: &str) {
        if let Some(name) = name {
            self.entry(name).rejected += 1;
        }
        *counts(&mut self.errors, code(error)) += 1;
    }

    pub fn reset(&mut self) {
        self.table.fill(Counts::default());
        self.commands.clear();
        self.errors.clear();
    }

    /// The `commandstats` section's fields.
    pub fn command_fields(&self) -> Vec<(String, String)> {
        let used = COMMANDS
            .iter()
            .zip(&self.table)
            .filter(|(_, c)| **c != Counts::default())
            .map(|(info, c)| (info.name, c));
        let all: BTreeMap<&str, &Counts> = used
            .chain(self.commands.iter().map(|(n, c)| (n.as_str(), c)))
            .collect();
        all.into_iter()
            .map(|(name, c)| {
                let per_call = if c.calls == 0 {
                    0.0
                } else {
                    c.usec as f64 / c.calls as f64
                };
                (
                    format!("cmdstat_{name}"),
                    format!(
                        "calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}",
                        c.calls, c.usec, c.rejected, c.failed
                    ),
                )
            })
            .collect()
    }

    /// The `errorstats` section's fields.
    pub fn error_fields(&self) -> Vec<(String, String)> {
        self.errors
            .iter()
            .map(|(code, n)| (format!("errorstat_{code}"), format!("count={n}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_redis_prints_them() {
        let mut s = CommandStats::default();
        s.ran("get", 4, None);
        s.ran("get", 2, Some("WRONGTYPE Operation against a key"));
        s.rejected(
            Some("get"),
            "ERR wrong number of arguments for 'get' command",
        );
        s.rejected(None, "ERR unknown command 'x'");
        // A subcommand is kept by name, a command of the table by its
        // place; both come out in name order, as one list.
        s.ran("client|list", 1, None);
        let incr = find_index("incr").expect("incr is in the table");
        s.ran_at(incr, 5, None);
        assert_eq!(
            s.command_fields(),
            vec![
                (
                    "cmdstat_client|list".to_string(),
                    "calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0".to_string()
                ),
                (
                    "cmdstat_get".to_string(),
                    "calls=2,usec=6,usec_per_call=3.00,rejected_calls=1,failed_calls=1".to_string()
                ),
                (
                    "cmdstat_incr".to_string(),
                    "calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0".to_string()
                ),
            ]
        );
        assert_eq!(
            s.error_fields(),
            vec![
                ("errorstat_ERR".to_string(), "count=2".to_string()),
                ("errorstat_WRONGTYPE".to_string(), "count=1".to_string())
            ]
        );
        s.reset();
        assert!(s.command_fields().is_empty() && s.error_fields().is_empty());
    }
}
