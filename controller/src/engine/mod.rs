//! The engine: observe what the agents run, plan (a pure function from
//! those observations to typed steps), execute exactly those steps. The
//! commands (`apply`, `plan`) sit above it.

pub mod atomic;
pub mod execute;
pub mod fix;
pub mod formation;
pub mod live;
pub mod migrate;
pub mod observe;
pub mod plan;
pub mod remove;
pub mod rolling;
pub mod scene;
pub mod shape;
pub mod step;

#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;
