//! `kvs-client` at a terminal: a prompt with line editing, history kept
//! across runs and completion of command names (rustyline, a well-kept
//! line editor; writing our own would be worse), notifications printed
//! above the line being edited, help with an example per command, and
//! errors that say what was expected. In a shell pipeline none of this is
//! used and the client's output stays byte for byte what SPEC gives.

use crate::jobs::parser::ParseError;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{DefaultHistory, History};
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};
use std::path::PathBuf;

pub const PROMPT: &str = "kvs> ";

/// Each command with one example.
pub const COMMANDS: &[(&str, &str)] = &[
    ("SUBSCRIBE", "SUBSCRIBE [door,window]"),
    ("UNSUBSCRIBE", "UNSUBSCRIBE [door]"),
    ("READ", "READ [door,window]"),
    ("WRITE", "WRITE [(door,open)(window,shut)]"),
    ("DELETE", "DELETE [window]"),
    ("DELAY", "DELAY 500"),
    ("DISCONNECT", "DISCONNECT"),
    ("HELP", "HELP"),
];

/// HELP at a terminal: the commands, one example each.
pub fn help() -> String {
    let mut s = String::from("Commands (keys and values: 1 to 40 bytes, no spaces or ,()[]):\n");
    for (_, example) in COMMANDS {
        s.push_str(&format!("  {example}\n"));
    }
    s.push_str("Notifications print as (key,value) or (key,DELETED). Ctrl-D leaves.");
    s
}

/// What was wrong with `line` and what was expected instead.
pub fn explain(line: &str, error: &ParseError) -> String {
    let word = line.split_whitespace().next().unwrap_or("");
    match COMMANDS.iter().find(|(name, _)| *name == word) {
        Some((_, example)) => format!("Invalid command: {error}; expected, e.g.: {example}"),
        None => {
            let names: Vec<&str> = COMMANDS.iter().map(|(n, _)| *n).collect();
            format!(
                "Invalid command: unknown command '{word}'; expected one of {} (HELP shows an example of each)",
                names.join(", ")
            )
        }
    }
}

/// Where history is kept: `$XDG_STATE_HOME/kvs/history`, else
/// `~/.local/state/kvs/history`.
pub fn history_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("kvs").join("history"))
}

/// Completes command names at the start of the line.
pub struct CommandNames;

impl Completer for CommandNames {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let upper = head.to_ascii_uppercase();
        let found = COMMANDS
            .iter()
            .filter(|(name, _)| name.starts_with(&upper))
            .map(|(name, _)| Pair {
                display: name.to_string(),
                replacement: format!("{name} "),
            })
            .collect();
        Ok((0, found))
    }
}

impl Hinter for CommandNames {
    type Hint = String;
}
impl Highlighter for CommandNames {}
impl Validator for CommandNames {}
impl Helper for CommandNames {}

/// A line of input, or the end of it.
pub enum Input {
    Line(String),
    End,
}

pub struct Console {
    editor: Editor<CommandNames, DefaultHistory>,
    history: Option<PathBuf>,
}

impl Console {
    pub fn new() -> rustyline::Result<Console> {
        let mut editor = Editor::new()?;
        editor.set_helper(Some(CommandNames));
        let history = history_path();
        if let Some(p) = &history {
            // No history yet is the usual first run.
            let _ = editor.load_history(p);
        }
        Ok(Console { editor, history })
    }

    /// Prints lines above the prompt from another thread (notifications).
    pub fn printer(&mut self) -> Option<Box<dyn FnMut(String) + Send>> {
        let mut p = self.editor.create_external_printer().ok()?;
        Some(Box::new(move |line| {
            let _ = p.print(line);
        }))
    }

    /// The next line typed; Ctrl-C drops the line being typed, Ctrl-D
    /// ends the input.
    pub fn read_line(&mut self) -> Input {
        loop {
            match self.editor.readline(PROMPT) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = self.editor.add_history_entry(line.as_str());
                    }
                    return Input::Line(line);
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(_) => return Input::End,
            }
        }
    }

    /// Keeps the history for the next run.
    pub fn save(&mut self) {
        let Some(p) = &self.history else {
            return;
        };
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if self.editor.history().is_empty() {
            return;
        }
        if let Err(e) = self.editor.save_history(p) {
            // Not eprintln!: a terminal already gone must not panic here.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "kvs-client: cannot keep the history in {}: {e}",
                p.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_was_expected() {
        let e = explain("WRITE [(a)]", &ParseError::Expected(','));
        assert!(e.contains("WRITE [(door,open)(window,shut)]"), "{e}");
        let e = explain("FOO", &ParseError::UnknownCommand);
        assert!(
            e.contains("unknown command 'FOO'") && e.contains("SUBSCRIBE"),
            "{e}"
        );
    }

    #[test]
    fn help_has_an_example_per_command() {
        let h = help();
        for (name, _) in COMMANDS {
            assert!(h.contains(name));
        }
    }
}
