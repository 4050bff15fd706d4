//! The `.job` language and its execution: parsing lines ([`parser`]),
//! streaming them from a file ([`lines`]), running one job file ([`runner`])
//! and running a whole folder on a pool of workers ([`batch`]).

pub mod batch;
pub mod command;
pub mod lines;
pub mod parser;
pub mod progress;
pub mod runner;

pub use batch::{find_jobs, run_folder, run_folder_until, BatchReport, JobFiles};
pub use command::Command;
pub use parser::{parse_line, ParseError};
pub use runner::{run_job, JobError};
