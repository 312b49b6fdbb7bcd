//! The message filters ([`mta_core::seams::MessageFilter`]) that [`super::pipeline`] puts in
//! each listener's pipeline, one per file.

pub mod header;
pub mod inbound;
pub mod milter;
pub mod own_results;
