//! What an activation sees of the silo: [`Context`], the parts it uses
//! (made once by the silo and shared by every activation), and [`Links`],
//! the router as seen from below.

use std::sync::{Arc, OnceLock};

use super::directory::Directory;
use crate::base::clock::Clock;
use crate::cluster::Cluster;
use crate::config::SiloConfig;
use crate::effects::Effects;
use crate::events::Events;
use crate::host::Messenger;
use crate::message::Dispatch;
use crate::observe::Counters;
use crate::runtime::deployments::Deployments;

/// The silo's parts every activation uses; nothing here knows the router.
pub(crate) struct Context {
    pub(crate) config: SiloConfig,
    pub(crate) deployments: Deployments,
    pub(crate) directory: Directory,
    /// The committer, the store, the task tracker and the stop signal.
    pub(crate) effects: Arc<Effects>,
    pub(crate) counters: Arc<Counters>,
    /// Where this silo serves, once it does (named in routed replies).
    pub(crate) address: OnceLock<String>,
    /// `None` for a silo on its own; an activation releases its placement
    /// through it when it retires.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Idle collection and the retention of remembered replies read it.
    pub(crate) clock: Arc<dyn Clock>,
    /// Where committed turns' events go: this silo's subscribers and the
    /// other silos'.
    pub(crate) events: Arc<Events>,
}

/// How an activation reaches other objects: both are the router, seen
/// through the two narrow traits (a test passes fakes).
#[derive(Clone)]
pub(crate) struct Links {
    /// Where its outbox's deliveries and the messages it passes on go.
    pub(crate) dispatch: Arc<dyn Dispatch>,
    /// What its guest's calls go through.
    pub(crate) messenger: Arc<dyn Messenger>,
}
