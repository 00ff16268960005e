//! Temporary directories and TLS test certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{random_hex, run_ok};

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `qis-{tag}-{pid}-{random}`.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "qis-{tag}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files [`tls_test_certs`] made.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The certificate authority's certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (PEM), for `127.0.0.1` and `localhost`, signed by [`ca`](Self::ca).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// A client certificate (PEM, `CN=qis-client`, for client
    /// authentication), signed by [`ca`](Self::ca): what a client presents to
    /// a server that asks for one.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PEM).
    pub client_key: PathBuf,
}

/// Make a throwaway certificate authority, a server certificate for
/// `127.0.0.1` / `localhost` and a client certificate in `dir` with the
/// `openssl` program (valid two days): `ca.pem`, `server.pem`, `server.key`,
/// `client.pem`, `client.key`.
pub fn tls_test_certs(dir: &Path) -> Result<TestCerts, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir).stdin(Stdio::null());
        run_ok(&mut command, &format!("openssl {}", args.join(" "))).map(drop)
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", dir.join("ext.cnf").display()))?;
    let new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout"];
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key,
            &[
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=qis-test-ca",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", dir.join("client.cnf").display()))?;
    for (name, subject, ext) in [
        ("server", "/CN=127.0.0.1", "ext.cnf"),
        ("client", "/CN=qis-client", "client.cnf"),
    ] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                &["req"][..],
                &new_key,
                &[&key, "-out", &csr, "-subj", subject],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ])?;
    }
    Ok(TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}
