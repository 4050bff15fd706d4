//! Wire formats, used by the server and the client alike. Each module only
//! turns bytes into values and back; none does I/O.
//!
//! - [`fifo`]: the original named-pipe protocol (SPEC section 3).
//! - [`resp`]: RESP2, the Redis protocol.

pub mod args;
pub mod fifo;
pub mod reply;
pub mod resp;
pub mod text_rules;
