//! What a batch run tells a person watching it: a live progress bar on a
//! terminal (job files done / total, commands run, commands per second,
//! backups running) and a one-line summary at the end.
//!
//! Workers only add to atomic counters (every [`FLUSH_EVERY`] commands, so
//! the counters cost nothing measurable); a ticker thread draws the bar ten
//! times a second. Lines a job prints on stderr (its invalid lines) go
//! through [`Progress::println`], which suspends the bar around them, so
//! the two never interleave.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A worker adds its count to the shared total this often.
pub const FLUSH_EVERY: usize = 4096;

#[derive(Default)]
struct Counters {
    files_done: AtomicUsize,
    commands: AtomicUsize,
    invalid: AtomicUsize,
}

pub struct Progress {
    counts: Counters,
    files: AtomicUsize,
    bar: Option<ProgressBar>,
    /// Backups running now (read from the backup machinery).
    backups_running: Mutex<Option<Box<dyn Fn() -> usize + Send + Sync>>>,
    started: Instant,
    stop: AtomicBool,
}

impl Progress {
    /// No bar: counting only (stderr is not a terminal, or server mode).
    pub fn hidden() -> Arc<Progress> {
        Arc::new(Progress::new(None))
    }

    /// A bar on stderr if it is a terminal, and its ticker; hidden
    /// otherwise.
    pub fn for_stderr() -> Arc<Progress> {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {bar:20} {pos}/{len} job files {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let p = Arc::new(Progress::new(Some(bar)));
        let ticker = p.clone();
        let _ = std::thread::Builder::new()
            .name("kvs-progress".into())
            .spawn(move || {
                while !ticker.stop.load(Ordering::Acquire) {
                    ticker.draw();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        p
    }

    fn new(bar: Option<ProgressBar>) -> Progress {
        Progress {
            counts: Counters::default(),
            files: AtomicUsize::new(0),
            bar,
            backups_running: Mutex::new(None),
            started: Instant::now(),
            stop: AtomicBool::new(false),
        }
    }

    /// Where the number of running backups comes from.
    pub fn watch_backups(&self, running: Box<dyn Fn() -> usize + Send + Sync>) {
        *self
            .backups_running
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(running);
    }

    pub fn set_files(&self, n: usize) {
        self.files.store(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(n as u64);
        }
    }

    pub fn file_done(&self) {
        self.counts.files_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_commands(&self, n: usize) {
        self.counts.commands.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_invalid(&self) {
        self.counts.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints a line on stderr without tearing the bar. A reader of stderr
    /// that went away (`2>&1 | head`) does not stop the jobs: `eprintln!`
    /// would panic the worker.
    pub fn println(&self, line: &str) {
        let print = || {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    fn backups(&self) -> usize {
        self.backups_running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |f| f())
    }

    fn draw(&self) {
        let Some(bar) = &self.bar else {
            return;
        };
        let commands = self.counts.commands.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(self.counts.files_done.load(Ordering::Relaxed) as u64);
        bar.set_message(format!(
            "{commands} cmds {:.0}/s, {} backups running",
            commands as f64 / secs,
            self.backups()
        ));
    }

    /// The one-line summary: files, commands, invalid lines, backups, time.
    pub fn summary(&self, backups: usize) -> String {
        format!(
            "{} job files, {} commands, {} invalid lines, {backups} backups, {:.3} s",
            self.counts.files_done.load(Ordering::Relaxed),
            self.counts.commands.load(Ordering::Relaxed),
            self.counts.invalid.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Removes the bar; whether there was one (then the summary is due).
    pub fn finish(&self) -> bool {
        self.stop.store(true, Ordering::Release);
        match &self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                true
            }
            None => false,
        }
    }
}
