//! Where a plan is carried out: what every phase of `execute` and the
//! slot movers (`migrate`, `atomic`, `fix`, `remove`) act through. A leaf,
//! so those modules do not import `execute`, which calls them.

use std::time::Duration;

use crate::fleet::{Deployment, Fleet, Target};
use crate::progress::Progress;

/// Where a plan is carried out.
#[derive(Clone, Copy)]
pub struct Scene<'a> {
    pub deployment: &'a Deployment,
    pub fleet: &'a Fleet,
    pub targets: &'a [Target],
    pub sentinels: &'a [Target],
    pub timeout: Duration,
    pub progress: &'a Progress,
}

impl Scene<'_> {
    pub(crate) fn target(&self, label: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.label() == label)
    }
    pub(crate) fn index(&self, label: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.label() == label)
    }
}
