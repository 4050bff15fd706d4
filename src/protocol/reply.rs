//! What a command answers, before any protocol frames it: one [`Reply`]
//! shape that the RESP encoder ([`super::resp::encode_reply`]) and the
//! FIFO encoder ([`super::fifo::encode_reply`]) each turn into their own
//! bytes, so a command is decided once whatever the transport.

/// The outcome of a command, for a protocol to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Int(i64),
    /// A value, as the bytes stored (nil when absent).
    Value(Option<Vec<u8>>),
    /// Values, as the bytes stored (MGET).
    Values(Vec<Option<Vec<u8>>>),
    Keys(Vec<Vec<u8>>),
    Scan(u64, Vec<Vec<u8>>),
    /// A status word (`string`, `none`).
    Status(&'static str),
    /// A bulk text (INFO).
    Text(String),
    /// An error, its code first (`ERR ...`).
    Error(String),
    /// EXEC's replies, one per queued command; `None` when a WATCHed key
    /// changed and nothing ran.
    Exec(Option<Vec<Reply>>),
    /// Replies nested in an array (LCS IDX's matches).
    Array(Vec<Reply>),
    /// A map in RESP3, a flat array of its pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A reply already encoded in the connection's protocol: what a
    /// command the reactor runs itself (CONFIG, PUBLISH, CLIENT ...)
    /// answered inside EXEC.
    Framed(Vec<u8>),
}
