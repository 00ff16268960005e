//! The macros that give every backend's config the shared builder methods.

/// Builder methods for the shared settings, the same names on every backend.
///
/// `config_builders!(MyConfig: prefix, retention, dedup_window,
/// connect_timeout, tls, credentials)` adds, for each part named, inherent
/// methods on `MyConfig` that set its fields:
///
/// | part | methods | field |
/// |---|---|---|
/// | `prefix` | `prefix(Subject)` | `prefix: Subject` |
/// | `retention` | `max_age(Duration)`, `max_bytes(u64)`, `retention(Retention)` | `retention: Retention` |
/// | `dedup_window` | `dedup_window(Duration)` | `dedup_window: Duration` |
/// | `connect_timeout` | `connect_timeout(Duration)` | `connect_timeout: Duration` |
/// | `tls` | `tls_ca(path)`, `tls_client_cert(path)`, `tls_client_key(path)` | `tls: TlsFiles` |
/// | `credentials` | `user_password(user, password)`, `token(secret)` | `credentials: Credentials` |
/// | `from_url` | `impl FromStr` calling `Self::from_url(&str) -> Result<Self>` | |
///
/// ```
/// use std::time::Duration;
/// use qis_core::config::Retention;
/// use qis_core::Subject;
///
/// #[derive(Default)]
/// pub struct MyConfig {
///     pub prefix: Subject,
///     pub retention: Retention,
/// }
/// qis_core::config_builders!(MyConfig: prefix, retention);
///
/// let c = MyConfig::default().max_age(Duration::from_secs(60));
/// assert_eq!(c.retention.max_age, Duration::from_secs(60));
/// ```
#[macro_export]
macro_rules! config_builders {
    ($ty:ty: $($part:ident),+ $(,)?) => {
        $( $crate::config_builders!(@part $ty, $part); )+
    };
    (@part $ty:ty, prefix) => {
        impl $ty {
            /// Store under another subject prefix (default `qis.iot`).
            pub fn prefix(mut self, prefix: $crate::Subject) -> Self {
                self.prefix = prefix;
                self
            }
        }
    };
    (@part $ty:ty, retention) => {
        impl $ty {
            /// Retention by age: packets older than this are removed (default 24 h).
            pub fn max_age(mut self, max_age: ::std::time::Duration) -> Self {
                self.retention.max_age = max_age;
                self
            }
            /// Retention by size: past this many bytes the oldest packets are removed (default 50 MiB).
            pub fn max_bytes(mut self, max_bytes: u64) -> Self {
                self.retention.max_bytes = max_bytes;
                self
            }
            /// Both retention limits at once.
            pub fn retention(mut self, retention: $crate::config::Retention) -> Self {
                self.retention = retention;
                self
            }
        }
    };
    (@part $ty:ty, dedup_window) => {
        impl $ty {
            /// How long a packet id is remembered to recognise a re-deposit (default 2 min).
            pub fn dedup_window(mut self, window: ::std::time::Duration) -> Self {
                self.dedup_window = window;
                self
            }
        }
    };
    (@part $ty:ty, connect_timeout) => {
        impl $ty {
            /// How long connecting may take (default 5 s).
            pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.connect_timeout = timeout;
                self
            }
        }
    };
    (@part $ty:ty, tls) => {
        impl $ty {
            /// Trust the CA certificates in this PEM file for the server's certificate.
            pub fn tls_ca(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.ca = Some(path.into());
                self
            }
            /// Present this PEM client certificate (mutual TLS; give the key too).
            pub fn tls_client_cert(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.client_cert = Some(path.into());
                self
            }
            /// The PEM key of the client certificate.
            pub fn tls_client_key(mut self, path: impl Into<::std::path::PathBuf>) -> Self {
                self.tls.client_key = Some(path.into());
                self
            }
        }
    };
    (@part $ty:ty, from_url) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            /// Parse a URL, as [`Self::from_url`] does.
            fn from_str(url: &str) -> $crate::Result<Self> {
                <$ty>::from_url(url)
            }
        }
    };
    (@part $ty:ty, credentials) => {
        impl $ty {
            /// Log in with a user name and password.
            pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
                self.credentials.user = Some(user.into());
                self.credentials.password = Some(password.into());
                self
            }
            /// Log in with a token (a lone secret).
            pub fn token(mut self, token: impl Into<String>) -> Self {
                self.credentials.token = Some(token.into());
                self
            }
        }
    };
}

/// Plain builder setters, one per field, each with the doc comment given:
/// `setters!(MyConfig { /// doc
/// batch: usize, … })` adds `pub fn batch(mut self, batch: usize) -> Self`.
/// A field written `name: impl Into<T>` takes anything that converts into
/// its type `T`; one written `name: Option<T>` takes `impl Into<T>` and sets
/// `Some`.
///
/// ```
/// use std::path::PathBuf;
///
/// #[derive(Default)]
/// pub struct MyConfig {
///     pub batch: usize,
///     pub label: String,
///     pub dump: Option<PathBuf>,
/// }
/// qis_core::setters!(MyConfig {
///     /// Most packets per batch.
///     batch: usize,
///     /// A label for logs.
///     label: impl Into<String>,
///     /// Where to write a dump.
///     dump: Option<PathBuf>,
/// });
/// let c = MyConfig::default().batch(5).label("edge").dump("/tmp/d");
/// assert_eq!((c.batch, c.label.as_str()), (5, "edge"));
/// assert_eq!(c.dump, Some(PathBuf::from("/tmp/d")));
/// ```
#[macro_export]
macro_rules! setters {
    ($ty:ty { $($fields:tt)* }) => {
        impl $ty {
            $crate::setters!(@fn $($fields)*);
        }
    };
    (@fn) => {};
    (@fn $(#[$doc:meta])* $field:ident : Option<$t:ty> $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = Some($field.into());
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
    (@fn $(#[$doc:meta])* $field:ident : impl Into<$t:ty> $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = $field.into();
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
    (@fn $(#[$doc:meta])* $field:ident : $t:ty $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: $t) -> Self {
            self.$field = $field;
            self
        }
        $crate::setters!(@fn $($($rest)*)?);
    };
}
