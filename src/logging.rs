//! The server's log on stderr: one line per event, each starting with a
//! UTC timestamp and a level (`2026-11-27T10:00:00.123Z WARN ...`), as
//! operators expect of a daemon; `--log-level` sets how much. Batch mode
//! keeps its plain `kvs: ...` lines, so existing scripts see what they
//! always saw. A job's own output (`<file>:<line>: Invalid command ...`)
//! is not log and never goes through here.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);
static STAMPED: AtomicBool = AtomicBool::new(false);

/// Server mode: timestamped lines, at most `max` detail.
pub fn server(max: Level) {
    MAX.store(max as u8, Ordering::Relaxed);
    STAMPED.store(true, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

/// Writes one log line (the macros below call this).
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = line(level, &args.to_string());
    line.push('\n');
    // One write per line, so lines of two threads never mix.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A log line as [`emit`] writes it, without its newline: for a caller
/// that must print it itself (around a progress bar).
pub fn line(level: Level, msg: &str) -> String {
    if STAMPED.load(Ordering::Relaxed) {
        format!("{} {} {msg}", timestamp(SystemTime::now()), level.name())
    } else {
        format!("kvs: {msg}")
    }
}

/// `2026-11-27T10:00:00.123Z` for `t`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (Howard
/// Hinnant's algorithm, proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A rate limit for one kind of log line (refused clients, protocol
/// errors, failed logins): at most `burst` lines a second go out; the rest
/// are counted, and the count goes out with the next line admitted, or
/// through [`Throttle::overdue`], so a flood of bad clients cannot flood
/// the log too and no event goes unmentioned.
#[derive(Debug)]
pub struct Throttle {
    burst: u32,
    window: Option<Instant>,
    sent: u32,
    held_back: u64,
}

impl Throttle {
    pub const fn new(burst: u32) -> Throttle {
        Throttle {
            burst,
            window: None,
            sent: 0,
            held_back: 0,
        }
    }

    /// Whether a line may go out now; if so, how many were held back
    /// before it (to say so in it).
    pub fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.sent = 0;
        }
        if self.sent < self.burst {
            self.sent += 1;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }

    /// Lines held back in a second that is over, and not said yet.
    pub fn overdue(&mut self) -> u64 {
        let over = self
            .window
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        if over {
            std::mem::take(&mut self.held_back)
        } else {
            0
        }
    }
}

/// A WARN line through `throttle`: written with the count of lines held
/// back before it, or held back itself.
pub fn warn_throttled(throttle: &std::sync::Mutex<Throttle>, args: fmt::Arguments<'_>) {
    let admitted = throttle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit();
    if let Some(n) = admitted {
        emit(Level::Warn, format_args!("{args}{}", held_back_note(n)));
    }
}

/// ` (and N more since the last report)` when `held_back` is not zero.
pub fn held_back_note(held_back: u64) -> String {
    match held_back {
        0 => String::new(),
        n => format!(" (and {n} more since the last report)"),
    }
}

#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Error, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Warn, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Info, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => { $crate::logging::emit($crate::logging::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_a_burst_through_and_counts_the_rest() {
        let mut t = Throttle::new(3);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        assert_eq!(t.overdue(), 0, "the second is not over");
        t.window = t.window.map(|w| w - Duration::from_secs(2));
        assert_eq!(t.overdue(), 2);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(held_back_note(2), " (and 2 more since the last report)");
    }

    #[test]
    fn timestamps_are_utc_iso_8601() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_773_600_123);
        assert_eq!(timestamp(t), "2026-11-27T10:00:00.123Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn levels_order() {
        assert!(Level::Error < Level::Debug);
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }
}
