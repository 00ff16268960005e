//! One side of a bridge: a transport, and how to connect it again.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::Result;
use crate::transport::DynTransport;

/// Connects (again) to one side of a bridge.
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, Result<DynTransport>> + Send + Sync>;

/// One side of a bridge.
#[derive(Clone)]
pub enum Endpoint {
    /// A transport already connected. If it fails, the bridge retries on it
    /// (most clients reconnect by themselves) but cannot open a new one.
    Transport(DynTransport),
    /// A way to connect, called at start and again whenever the side failed:
    /// a device whose hub is unreachable at boot still starts its bridge.
    Connect(Connector),
}

impl Endpoint {
    /// An endpoint that connects with `connect` (e.g.
    /// `|| Box::pin(qis::connect(url))`).
    pub fn connect<F>(connect: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<DynTransport>> + Send + Sync + 'static,
    {
        Endpoint::Connect(Arc::new(connect))
    }

    pub(crate) async fn open(&self) -> Result<DynTransport> {
        match self {
            Endpoint::Transport(t) => Ok(t.clone()),
            Endpoint::Connect(c) => c().await,
        }
    }

    pub(crate) fn reconnects(&self) -> bool {
        matches!(self, Endpoint::Connect(_))
    }
}

impl From<DynTransport> for Endpoint {
    fn from(t: DynTransport) -> Self {
        Endpoint::Transport(t)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Transport(t) => write!(f, "Endpoint::Transport({})", t.name()),
            Endpoint::Connect(_) => f.write_str("Endpoint::Connect(..)"),
        }
    }
}
