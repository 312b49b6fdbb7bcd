//! A milter client: each message passes the milters of `[[inbound.milter]]` in turn.

pub mod codec;
