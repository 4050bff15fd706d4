//! Command-line parsing for `kvs`: the number of positional arguments picks
//! batch or server mode (SPEC section 1); options may follow them.

use crate::logging::Level;
use crate::persist::{DataDirOptions, Fsync, DEFAULT_COMPACT_AT};
use crate::reactor::settings::Settings;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: kvs <jobs_dir> <max_backups> <max_threads> [--summary] [data options]
       kvs <jobs_dir> <max_threads> <max_backups> <registration_fifo> [options]

Batch mode (3 arguments) runs every *.job file in <jobs_dir> and exits; on a
terminal it shows its progress and a summary (--summary prints the summary
line on stderr also when stderr is not a terminal).
Server mode (4 arguments) also serves clients through <registration_fifo>
until SIGINT or SIGTERM. Note the different order of the two limits.

Data options (both modes; without --data-dir the store lives in memory only):
  --data-dir <dir>          load the store from <dir> at start, log every change to it
  --fsync <when>            always | everysec | no (default everysec): when the log is
                            synced; with always, a client's change is answered once on disk
  --compact-at <bytes>      snapshot the store once the log passes this (default 67108864)
  --repair                  start with what comes before damage or a missing file (written
                            anew; the damaged and later files are set aside as .dropped)
  --store etcd://<host:port>[,<host:port>...]
                            keep the dataset in an etcd cluster, shared by every kvs node
                            started with the same members and prefix: changes are made there
                            first, and every node hears every change (not with --data-dir:
                            etcd is the durability; its members need --max-txn-ops 256).
                            Expiry is refused there (see README)
  --store-prefix <p>        what this dataset's keys start with in etcd (default kvs/)
  --store-reads cache|linearizable
                            cache (default): reads from this node's copy (a session reads its
                            own writes; others' changes once the feed brings them);
                            linearizable: each read first waits for every change etcd had
                            made when it came (one etcd round trip), refused without quorum

Server options:
  --max-sessions <n>        sessions at once (default 1024)
  --max-subscriptions <n>   subscriptions per session (default 1024)
  --output-buffer <bytes>   output a client may leave unread (default 1048576): a subscriber
                            past it is disconnected; a client's own replies are sent whole,
                            and it is served again once it has read them
  --timeout <seconds>       close clients with no request for this long (default 0: never;
                            subscribers and clients waiting for an answer are kept)
  --store-threads <n>       threads running client store operations (default 2; 32 with
                            --store etcd, where each waits on etcd for its change)
  --spin <microseconds>     how long the server watches, busy, for a lone client's answer
                            from a store thread and then for its next request, and that
                            thread for the client's (or, under 32 clients, the clients')
                            next operation, before each sleeps (default 50; 0 with
                            --store etcd): wake-ups saved on each request, for up to
                            that much CPU while such waits catch what they wait for
  --fifo-mode <octal>       mode of the registration FIFO (default 600)
  --log-level <level>       error | warn | info | debug (default info): how much the
                            server logs on stderr, each line timestamped (UTC)

RESP (the Redis protocol, for redis-cli and Redis client libraries):
  --resp-socket <path>      serve RESP on a Unix socket at <path>
  --socket-mode <octal>     mode of that socket (default 600)
  --resp-port <port>        serve RESP on TCP <port>, on 127.0.0.1 only
  --resp-bind <addr>        bind TCP to <addr> instead (needs --requirepass-file
                            unless <addr> is a loopback address)
  --requirepass-file <path> clients must AUTH with the password in <path>

  -h, --help                print this help
  -V, --version             print the version";

/// Longest `--spin`: past a millisecond the server would rather sleep.
pub const MAX_SPIN_US: u64 = 1000;

/// More store threads than this cannot help and may fail to start.
pub const MAX_STORE_THREADS: usize = 256;

/// `--store-threads` with `--store etcd` when it is not given: changes in
/// flight at once from one node (each thread waits on etcd while its
/// change is made).
pub const ETCD_STORE_THREADS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Help,
    Version,
    Batch {
        jobs_dir: PathBuf,
        max_backups: usize,
        max_threads: usize,
        data: Option<DataDirOptions>,
        /// `--store etcd://...`: the dataset is shared through etcd.
        etcd: Option<crate::etcd::EtcdOptions>,
        /// Print the one-line summary even when stderr is not a terminal.
        summary: bool,
    },
    Server {
        jobs_dir: PathBuf,
        max_threads: usize,
        max_backups: usize,
        registration_fifo: PathBuf,
        options: Settings,
    },
}

/// A command line that cannot be run; print it, then [`USAGE`], exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses a whole number >= 1.
pub fn positive(name: &str, value: &str) -> Result<usize, UsageError> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(UsageError(format!(
            "{name} must be a whole number >= 1, not '{value}'"
        ))),
    }
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Mode, UsageError> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Mode::Help);
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Ok(Mode::Version);
    }
    let split = args
        .iter()
        .position(|a| a.starts_with("--"))
        .unwrap_or(args.len());
    let (pos, flags) = args.split_at(split);
    match pos.len() {
        3 => {
            let mut data = DataFlags::default();
            let mut summary = false;
            let mut it = flags.iter();
            while let Some(flag) = it.next() {
                if flag == "--summary" {
                    summary = true;
                } else if !data.take(flag, &mut it)? {
                    return Err(UsageError(format!(
                        "batch mode takes only --summary and data options, not '{flag}'"
                    )));
                }
            }
            let (data, etcd) = data.finish()?;
            Ok(Mode::Batch {
                jobs_dir: PathBuf::from(&pos[0]),
                max_backups: positive("max_backups", &pos[1])?,
                max_threads: positive("max_threads", &pos[2])?,
                data,
                etcd,
                summary,
            })
        }
        4 => Ok(Mode::Server {
            jobs_dir: PathBuf::from(&pos[0]),
            max_threads: positive("max_threads", &pos[1])?,
            max_backups: positive("max_backups", &pos[2])?,
            registration_fifo: PathBuf::from(&pos[3]),
            options: parse_server_options(flags)?,
        }),
        n => Err(UsageError(format!(
            "expected 3 arguments (batch mode) or 4 (server mode), got {n}"
        ))),
    }
}

/// The data dir options, as they come.
#[derive(Default)]
struct DataFlags {
    dir: Option<PathBuf>,
    fsync: Option<Fsync>,
    repair: bool,
    compact_at: Option<u64>,
    store: Option<String>,
    store_prefix: Option<String>,
    store_reads: Option<String>,
}

impl DataFlags {
    /// Takes `flag` (and its value from `rest`) if it is a data option.
    fn take<'a>(
        &mut self,
        flag: &str,
        rest: &mut impl Iterator<Item = &'a String>,
    ) -> Result<bool, UsageError> {
        if flag == "--repair" {
            self.repair = true;
            return Ok(true);
        }
        if !matches!(
            flag,
            "--data-dir"
                | "--fsync"
                | "--compact-at"
                | "--store"
                | "--store-prefix"
                | "--store-reads"
        ) {
            return Ok(false);
        }
        let value = rest
            .next()
            .ok_or_else(|| UsageError(format!("option {flag} needs a value")))?;
        match flag {
            "--data-dir" => self.dir = Some(PathBuf::from(value)),
            "--store" => self.store = Some(value.clone()),
            "--store-prefix" => self.store_prefix = Some(value.clone()),
            "--store-reads" => self.store_reads = Some(value.clone()),
            "--fsync" => {
                self.fsync = Some(Fsync::parse(value).ok_or_else(|| {
                    UsageError(format!(
                        "--fsync: '{value}' is not one of always, everysec, no"
                    ))
                })?)
            }
            _ => self.compact_at = Some(positive("compact-at", value)? as u64),
        }
        Ok(true)
    }

    fn finish(
        self,
    ) -> Result<(Option<DataDirOptions>, Option<crate::etcd::EtcdOptions>), UsageError> {
        let etcd = match &self.store {
            Some(url) => {
                let mut o = crate::etcd::EtcdOptions::parse(url, self.store_prefix.as_deref())
                    .map_err(UsageError)?;
                if let Some(reads) = &self.store_reads {
                    o.linearizable =
                        crate::etcd::EtcdOptions::parse_reads(reads).map_err(UsageError)?;
                }
                Some(o)
            }
            None if self.store_prefix.is_some() || self.store_reads.is_some() => {
                return Err(UsageError(
                    "--store-prefix and --store-reads need --store".into(),
                ))
            }
            None => None,
        };
        if etcd.is_some() && self.dir.is_some() {
            return Err(UsageError(
                "--data-dir and --store etcd:// do not go together: etcd keeps the data (on a majority of its members' disks before a change is answered)".into(),
            ));
        }
        let Some(dir) = self.dir else {
            if self.fsync.is_some() || self.repair || self.compact_at.is_some() {
                return Err(UsageError(
                    "--fsync, --repair and --compact-at need --data-dir".into(),
                ));
            }
            return Ok((None, etcd));
        };
        Ok((
            Some(DataDirOptions {
                dir,
                fsync: self.fsync.unwrap_or(Fsync::EverySec),
                repair: self.repair,
                compact_at: self.compact_at.unwrap_or(DEFAULT_COMPACT_AT),
            }),
            etcd,
        ))
    }
}

fn parse_server_options(flags: &[String]) -> Result<Settings, UsageError> {
    let mut o = Settings::default();
    let mut data = DataFlags::default();
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        if data.take(flag, &mut it)? {
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| UsageError(format!("option {flag} needs a value")))?;
        let name = flag.trim_start_matches("--");
        match flag.as_str() {
            "--max-sessions" => o.max_sessions = positive(name, value)?,
            "--max-subscriptions" => o.max_subscriptions = positive(name, value)?,
            "--output-buffer" => o.output_buffer = positive(name, value)?,
            "--timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    UsageError(format!(
                        "--timeout: '{value}' is not a whole number of seconds"
                    ))
                })?;
                o.timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            "--spin" => {
                o.spin = Some(std::time::Duration::from_micros(
                    value
                        .parse()
                        .ok()
                        .filter(|&us| us <= MAX_SPIN_US)
                        .ok_or_else(|| {
                            UsageError(format!(
                                "--spin: '{value}' is not a whole number of microseconds up to {MAX_SPIN_US}"
                            ))
                        })?,
                ));
            }
            "--store-threads" => {
                o.store_threads = positive(name, value)?;
                // Each is a real thread, started at once.
                if o.store_threads > MAX_STORE_THREADS {
                    return Err(UsageError(format!(
                        "--store-threads: at most {MAX_STORE_THREADS}, not {value}"
                    )));
                }
            }
            "--fifo-mode" => o.fifo_mode = octal_mode(flag, value)?,
            "--socket-mode" => o.socket_mode = octal_mode(flag, value)?,
            "--log-level" => {
                o.log_level = Level::parse(value).ok_or_else(|| {
                    UsageError(format!(
                        "--log-level: '{value}' is not one of error, warn, info, debug"
                    ))
                })?
            }
            "--resp-socket" => o.resp_socket = Some(PathBuf::from(value)),
            "--requirepass-file" => o.requirepass_file = Some(PathBuf::from(value)),
            "--resp-port" => {
                o.resp_port = Some(value.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(
                    || UsageError(format!("--resp-port: '{value}' is not a port (1-65535)")),
                )?)
            }
            "--resp-bind" => {
                o.resp_bind = Some(value.parse::<IpAddr>().map_err(|_| {
                    UsageError(format!("--resp-bind: '{value}' is not an IP address"))
                })?)
            }
            _ => return Err(UsageError(format!("unknown option '{flag}'"))),
        }
    }
    (o.data, o.etcd) = data.finish()?;
    if o.etcd.is_some() && !flags.iter().any(|f| f == "--store-threads") {
        // A store thread waits out an etcd round trip per change: two
        // would make a node take two changes at a time.
        o.store_threads = ETCD_STORE_THREADS;
    }
    if o.resp_bind.is_some() && o.resp_port.is_none() {
        return Err(UsageError("--resp-bind needs --resp-port".into()));
    }
    // Redis's protected mode, made strict: nobody beyond this machine
    // reaches a server without a password.
    if o.resp_bind.is_some_and(|a| !a.is_loopback()) && o.requirepass_file.is_none() {
        return Err(UsageError(
            "--resp-bind to a non-loopback address needs --requirepass-file".into(),
        ));
    }
    Ok(o)
}

fn octal_mode(flag: &str, value: &str) -> Result<u32, UsageError> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| UsageError(format!("{flag}: '{value}' is not an octal mode")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Mode, UsageError> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn store_options_are_checked() {
        let err = |v: &[&str]| parse(v).unwrap_err().0;
        assert!(
            err(&["d", "1", "1", "--store", "etcd://a:1", "--data-dir", "x"])
                .contains("do not go together")
        );
        assert!(err(&["d", "1", "1", "--store-prefix", "p/"]).contains("need --store"));
        assert!(err(&["d", "1", "1", "--store-reads", "cache"]).contains("need --store"));
        let url = "etcd://127.0.0.1:2379";
        assert!(
            err(&["d", "1", "1", "--store", url, "--store-reads", "x"]).contains("linearizable")
        );
        assert!(err(&["d", "1", "1", "--store", "http://a:1"]).contains("etcd://"));
        match parse(&[
            "d",
            "1",
            "1",
            "r",
            "--store",
            "etcd://a:1,b:2",
            "--store-prefix",
            "t/",
        ]) {
            Ok(Mode::Server { options, .. }) => {
                let e = options.etcd.unwrap();
                assert_eq!(e.endpoints, ["a:1", "b:2"]);
                assert_eq!(e.prefix, b"t/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modes_by_argument_count() {
        assert_eq!(
            parse(&["d", "2", "4"]),
            Ok(Mode::Batch {
                jobs_dir: "d".into(),
                max_backups: 2,
                max_threads: 4,
                data: None,
                etcd: None,
                summary: false,
            })
        );
        match parse(&[
            "d",
            "2",
            "4",
            "--data-dir",
            "/x",
            "--fsync",
            "always",
            "--repair",
        ]) {
            Ok(Mode::Batch { data: Some(d), .. }) => {
                assert_eq!(d.fsync, Fsync::Always);
                assert!(d.repair);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "d",
            "4",
            "2",
            "/tmp/reg",
            "--max-sessions",
            "9",
            "--spin",
            "0",
        ]) {
            Ok(Mode::Server {
                max_threads: 4,
                max_backups: 2,
                options,
                ..
            }) => {
                assert_eq!(options.max_sessions, 9);
                assert_eq!(options.spin, Some(std::time::Duration::ZERO));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["d", "--help"]), Ok(Mode::Help));
        assert_eq!(parse(&["--version"]), Ok(Mode::Version));
    }

    #[test]
    fn bad_arguments() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["d", "2"]).is_err());
        assert!(parse(&["d", "0", "1"]).is_err());
        assert!(parse(&["d", "x", "1"]).is_err());
        assert!(parse(&["d", "1", "-3"]).is_err());
        assert!(parse(&["d", "1", "1", "--max-sessions", "2"]).is_err());
        assert!(
            parse(&["d", "1", "1", "--fsync", "always"]).is_err(),
            "no data dir"
        );
        assert!(parse(&["d", "1", "1", "--data-dir", "x", "--fsync", "sometimes"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--bogus", "2"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--max-sessions"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--fifo-mode", "999"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--store-threads", "100000"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--spin", "5000"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--spin", "-1"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--resp-port", "0"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--resp-port", "70000"]).is_err());
        assert!(parse(&["d", "1", "1", "f", "--resp-bind", "127.0.0.1"]).is_err());
        let open = [
            "d",
            "1",
            "1",
            "f",
            "--resp-port",
            "7000",
            "--resp-bind",
            "0.0.0.0",
        ];
        assert!(parse(&open).is_err(), "no password, not loopback");
        let mut with_pass = open.to_vec();
        with_pass.extend(["--requirepass-file", "/p"]);
        assert!(parse(&with_pass).is_ok());
    }
}
