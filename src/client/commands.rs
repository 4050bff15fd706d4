//! The client's stdin language (SPEC section 4): one command per line.

use crate::jobs::parser::{parse_delay, parse_keys, parse_pairs, split_word, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Delay(u64),
    Disconnect,
    Read(Vec<String>),
    Write(Vec<(String, String)>),
    Delete(Vec<String>),
    /// Prints [`CLIENT_HELP`]: the error line for a bad command points here.
    Help,
}

/// What HELP prints in the client.
pub const CLIENT_HELP: &str = "\
Available commands:
  SUBSCRIBE [key,...]
  UNSUBSCRIBE [key,...]
  READ [key,...]
  WRITE [(key,value)(key2,value2)...]
  DELETE [key,...]
  DELAY <ms>
  DISCONNECT
  HELP
";

/// Parses one stdin line; `Ok(None)` for a blank line or a `#` comment.
pub fn parse_client_line(line: &[u8]) -> Result<Option<ClientCommand>, ParseError> {
    let (word, rest) = split_word(line);
    if word.is_empty() || word.starts_with(b"#") {
        return Ok(None);
    }
    let no_args = |c: ClientCommand| {
        if rest.iter().all(|b| b.is_ascii_whitespace()) {
            Ok(c)
        } else {
            Err(ParseError::TrailingInput)
        }
    };
    let cmd = match word {
        b"SUBSCRIBE" => ClientCommand::Subscribe(parse_keys(rest)?),
        b"UNSUBSCRIBE" => ClientCommand::Unsubscribe(parse_keys(rest)?),
        b"DELAY" => ClientCommand::Delay(parse_delay(rest)?),
        b"DISCONNECT" => no_args(ClientCommand::Disconnect)?,
        b"HELP" => no_args(ClientCommand::Help)?,
        b"READ" => ClientCommand::Read(parse_keys(rest)?),
        b"WRITE" => ClientCommand::Write(parse_pairs(rest)?),
        b"DELETE" => ClientCommand::Delete(parse_keys(rest)?),
        _ => return Err(ParseError::UnknownCommand),
    };
    Ok(Some(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<ClientCommand>, ParseError> {
        parse_client_line(s.as_bytes())
    }

    #[test]
    fn commands() {
        assert_eq!(
            p("SUBSCRIBE [a]"),
            Ok(Some(ClientCommand::Subscribe(vec!["a".into()])))
        );
        assert_eq!(
            p("UNSUBSCRIBE [a,b]"),
            Ok(Some(ClientCommand::Unsubscribe(vec![
                "a".into(),
                "b".into()
            ])))
        );
        assert_eq!(p("DELAY 10"), Ok(Some(ClientCommand::Delay(10))));
        assert_eq!(p("DISCONNECT"), Ok(Some(ClientCommand::Disconnect)));
        assert_eq!(p("HELP"), Ok(Some(ClientCommand::Help)));
        assert_eq!(
            p("WRITE [(k,v)]"),
            Ok(Some(ClientCommand::Write(vec![("k".into(), "v".into())])))
        );
        assert_eq!(p(""), Ok(None));
        assert_eq!(p("# note"), Ok(None));
    }

    #[test]
    fn errors() {
        assert_eq!(p("SUBSCRIBE a"), Err(ParseError::Expected('[')));
        assert_eq!(p("DISCONNECT now"), Err(ParseError::TrailingInput));
        assert_eq!(p("DELAY"), Err(ParseError::BadDelay));
        assert_eq!(p("SUBSCRIBE [a] x"), Err(ParseError::TrailingInput));
        assert_eq!(p("JUMP"), Err(ParseError::UnknownCommand));
    }
}
