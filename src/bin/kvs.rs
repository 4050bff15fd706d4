//! `kvs`: batch mode runs a folder of job files; server mode also serves
//! clients over named pipes. See `kvs --help`.

use kvs::backup::Backups;
use kvs::cli::{parse_args, Mode, USAGE};
use kvs::jobs::progress::Progress;
use kvs::jobs::run_folder;
use kvs::persist::{DataDir, DataDirOptions};
use kvs::reactor::{run_server, ServerConfig};
use kvs::store::expiry::ExpiryCycle;
use kvs::store::Store;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Writes a line to `out`; a reader that went away (`kvs --help | head
/// -1`) is no reason to panic.
fn line(mut out: impl Write, text: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{text}");
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Help) => {
            line(io::stdout(), format_args!("{USAGE}"));
            ExitCode::SUCCESS
        }
        Ok(Mode::Version) => {
            line(
                io::stdout(),
                format_args!("kvs {}", env!("CARGO_PKG_VERSION")),
            );
            ExitCode::SUCCESS
        }
        Ok(Mode::Batch {
            jobs_dir,
            max_backups,
            max_threads,
            data,
            etcd,
            summary,
        }) => batch(
            &jobs_dir,
            max_backups,
            max_threads,
            data.as_ref(),
            etcd.as_ref(),
            summary,
        ),
        Ok(Mode::Server {
            jobs_dir,
            max_threads,
            max_backups,
            registration_fifo,
            options,
        }) => {
            kvs::logging::server(options.log_level);
            let cfg = ServerConfig {
                jobs_dir: &jobs_dir,
                max_threads,
                max_backups,
                registration_fifo: &registration_fifo,
                options,
            };
            match run_server(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    kvs::log_error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            line(io::stderr(), format_args!("kvs: {e}\n{USAGE}"));
            ExitCode::from(2)
        }
    }
}

/// Exit status: 0 all jobs ran, 1 some job or backup failed or the data
/// dir cannot be used, 2 bad usage.
fn batch(
    dir: &Path,
    max_backups: usize,
    max_threads: usize,
    data: Option<&DataDirOptions>,
    etcd: Option<&kvs::etcd::EtcdOptions>,
    summary: bool,
) -> ExitCode {
    let store = Arc::new(Store::new());
    // With --store etcd, the job files read and change the shared dataset.
    let mirror = match etcd.map(|e| e.attach(&store)).transpose() {
        Ok(m) => m,
        Err(e) => {
            kvs::log_error!("--store etcd: {e}");
            return ExitCode::from(1);
        }
    };
    let data_dir = match data.map(|d| DataDir::open(d, &store)).transpose() {
        Ok(d) => d,
        Err(e) => {
            kvs::log_error!("{e}");
            return ExitCode::from(1);
        }
    };
    // Keys a server run gave deadlines to go when those pass, here too
    // (only a data dir can hold any).
    let expiry = match data_dir
        .as_ref()
        .map(|_| ExpiryCycle::start(store.clone()))
        .transpose()
    {
        Ok(e) => e,
        Err(e) => {
            kvs::log_error!("cannot start the expire cycle: {e}");
            return ExitCode::from(1);
        }
    };
    let backups = Backups::new(max_backups);
    let progress = Progress::for_stderr();
    {
        let backups = backups.clone();
        progress.watch_backups(Box::new(move || backups.running()));
    }
    let report = run_folder(dir, &store, &backups, max_threads, &progress);
    backups.wait_all();
    if progress.finish() || summary {
        line(
            io::stderr(),
            format_args!("kvs: {}", progress.summary(backups.started())),
        );
    }
    drop(expiry);
    if let Some(m) = mirror {
        m.stop();
    }
    if let Some(d) = data_dir {
        d.close();
    }
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            kvs::log_error!("cannot read jobs folder {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    if report.failed_jobs > 0 || backups.failures() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// glibc's malloc serialises threads that free what another thread
/// allocated (the reactor builds commands, the store pool frees them);
/// mimalloc frees across threads without a shared lock.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
