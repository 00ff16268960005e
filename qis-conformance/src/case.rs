//! One shared case, and the capabilities a case may need.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use qis_core::{Capabilities, Subject};

use crate::backend::DynBackend;
use crate::support::CaseResult;

/// What running a case returns: `Err` says what did not happen.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One flag of [`Capabilities`] a case can need. A backend whose transport
/// lacks it has the case reported *ignored* ("lacks capability `live`"),
/// never passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`Capabilities::durable`]
    Durable,
    /// [`Capabilities::persistent`]
    Persistent,
    /// [`Capabilities::live`]
    Live,
    /// [`Capabilities::fire_and_forget`]
    FireAndForget,
    /// [`Capabilities::native_wildcards`]
    NativeWildcards,
    /// [`Capabilities::dedup`]
    Dedup,
    /// [`Capabilities::nak`]
    Nak,
    /// [`Capabilities::start_since`]
    StartSince,
    /// [`Capabilities::shared_consumers`]
    SharedConsumers,
    /// [`Capabilities::backlog`]
    Backlog,
    /// [`Capabilities::similarity`]
    Similarity,
}

impl Capability {
    /// The name of the [`Capabilities`] field (`fire_and_forget`).
    pub fn name(self) -> &'static str {
        match self {
            Capability::Durable => "durable",
            Capability::Persistent => "persistent",
            Capability::Live => "live",
            Capability::FireAndForget => "fire_and_forget",
            Capability::NativeWildcards => "native_wildcards",
            Capability::Dedup => "dedup",
            Capability::Nak => "nak",
            Capability::StartSince => "start_since",
            Capability::SharedConsumers => "shared_consumers",
            Capability::Backlog => "backlog",
            Capability::Similarity => "similarity",
        }
    }

    /// Whether `caps` has it.
    pub fn of(self, caps: &Capabilities) -> bool {
        match self {
            Capability::Durable => caps.durable,
            Capability::Persistent => caps.persistent,
            Capability::Live => caps.live,
            Capability::FireAndForget => caps.fire_and_forget,
            Capability::NativeWildcards => caps.native_wildcards,
            Capability::Dedup => caps.dedup,
            Capability::Nak => caps.nak,
            Capability::StartSince => caps.start_since,
            Capability::SharedConsumers => caps.shared_consumers,
            Capability::Backlog => caps.backlog,
            Capability::Similarity => caps.similarity,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One case of the suite: a name, the capabilities it needs, and an async
/// function over a backend and a fresh prefix.
///
/// The suite's own cases are listed by [`cases::all`](crate::cases::all); a
/// backend can make its own with [`Case::new`] and run them with
/// [`trials_of`](crate::trials_of) under the same rules.
#[derive(Clone)]
pub struct Case {
    name: &'static str,
    needs: &'static [Capability],
    private_server: bool,
    run: fn(DynBackend, Subject) -> CaseFuture,
}

impl Case {
    /// A case named `name` needing `needs`, running `run`.
    pub const fn new(
        name: &'static str,
        needs: &'static [Capability],
        run: fn(DynBackend, Subject) -> CaseFuture,
    ) -> Case {
        Case {
            name,
            needs,
            private_server: false,
            run,
        }
    }

    /// The case also needs a private server it may restart
    /// ([`Backend::restartable`](crate::Backend::restartable)); on a
    /// backend without one it is ignored.
    pub const fn with_private_server(mut self) -> Case {
        self.private_server = true;
        self
    }

    /// Whether it needs a private server ([`with_private_server`](Self::with_private_server)).
    pub fn needs_private_server(&self) -> bool {
        self.private_server
    }

    /// The name, the part after `backend::` in a test name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The capabilities it needs.
    pub fn needs(&self) -> &'static [Capability] {
        self.needs
    }

    /// The first capability it needs that `caps` lacks, if any.
    pub fn missing(&self, caps: &Capabilities) -> Option<Capability> {
        self.needs.iter().copied().find(|need| !need.of(caps))
    }

    /// Run it on `backend` under `prefix`.
    pub fn run(&self, backend: DynBackend, prefix: Subject) -> CaseFuture {
        (self.run)(backend, prefix)
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .field("private_server", &self.private_server)
            .finish_non_exhaustive()
    }
}
