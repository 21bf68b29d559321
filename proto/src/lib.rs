//! The wire API shared by `paddock` (controller) and `paddockd` (agent).
//!
//! Both sides convert these messages into the shared model (the
//! `paddock-model` crate, whose `wire` module holds every conversion) at the
//! edge; generated types do not travel further into either program.

#[allow(clippy::all, rust_2018_idioms)]
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("paddock.agent.v1");
    }
}

pub use agent::v1;
