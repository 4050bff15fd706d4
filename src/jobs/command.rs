//! The commands of the `.job` language, as values.

use std::fmt;

pub use crate::protocol::text_rules::MAX_STRING;

/// Most keys or pairs one command may carry.
pub const MAX_PAIRS: usize = 256;

/// One parsed job line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Write(Vec<(String, String)>),
    Read(Vec<String>),
    Delete(Vec<String>),
    Show,
    Wait(u64),
    Backup,
    Help,
}

/// The text HELP writes, byte for byte as SPEC gives it.
pub const HELP_TEXT: &str = "Available commands:
  WRITE [(key,value)(key2,value2),...]
  READ [key,key2,...]
  DELETE [key,key2,...]
  SHOW
  WAIT <delay_ms>
  BACKUP
  HELP
";

/// Prints the command in canonical job syntax: parsing the output gives the
/// same command back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, name: &str, keys: &[String]) -> fmt::Result {
            write!(f, "{name} [{}]", keys.join(","))
        }
        match self {
            Command::Write(pairs) => {
                f.write_str("WRITE [")?;
                for (k, v) in pairs {
                    write!(f, "({k},{v})")?;
                }
                f.write_str("]")
            }
            Command::Read(keys) => list(f, "READ", keys),
            Command::Delete(keys) => list(f, "DELETE", keys),
            Command::Show => f.write_str("SHOW"),
            Command::Wait(ms) => write!(f, "WAIT {ms}"),
            Command::Backup => f.write_str("BACKUP"),
            Command::Help => f.write_str("HELP"),
        }
    }
}
