//! Bytes on the wire per packet, counted by a pass-through TCP proxy on
//! loopback between a second transport handle and the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use qis::{EncodedPacket, Subject, TransportConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::scenario::{Envelope, CONNECT_TIMEOUT};
use crate::error::describe;

#[derive(Debug, Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
}

/// A loopback TCP proxy to one upstream address that counts the bytes going
/// each way. Dropping it closes every connection through it.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

impl CountingProxy {
    /// Listen on 127.0.0.1 (a free port) and forward each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let c = c.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let _ = tokio::join!(pump(cr, sw, &c.up), pump(sr, cw, &c.down));
                });
            }
        });
        Ok(CountingProxy {
            addr,
            counters,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes so far: (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counters.up.load(Ordering::Relaxed),
            self.counters.down.load(Ordering::Relaxed),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's host and port in a single-server URL, or why it cannot be proxied.
fn endpoint(url: &str) -> Result<(String, u16), String> {
    let u = url::Url::parse(url)
        .map_err(|_| "the URL names several servers or is not host:port".to_string())?;
    let default_port = match u.scheme() {
        "nats" => 4222,
        "redis" => 6379,
        "kafka" => 9092,
        "chroma" => 8000,
        "tls" | "rediss" | "chromas" => {
            return Err("a TLS URL is not proxied (the server name would not match)".into())
        }
        other => return Err(format!("{other}:// is not a TCP server")),
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, u.port().unwrap_or(default_port)))
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn through(url: &str, port: u16) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    u.set_host(Some("127.0.0.1")).ok()?;
    u.set_port(Some(port)).ok()?;
    Some(u.to_string())
}

/// Deposit `packets` one at a time through a counting proxy and report the
/// bytes each deposit put on the wire. The first packet warms the connection
/// up (stream or topic creation) and is not counted.
pub async fn measure(
    url: &str,
    prefix: &Subject,
    packets: &[EncodedPacket],
    body_mean: f64,
    bar: &ProgressBar,
) -> Envelope {
    match try_measure(url, prefix, packets, body_mean, bar).await {
        Ok(e) => e,
        Err(why) => Envelope::NotMeasured(why),
    }
}

async fn try_measure(
    url: &str,
    prefix: &Subject,
    packets: &[EncodedPacket],
    body_mean: f64,
    bar: &ProgressBar,
) -> Result<Envelope, String> {
    let (host, port) = endpoint(url)?;
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {host}:{port}"))?;
    let proxy = CountingProxy::start(upstream)
        .await
        .map_err(|e| format!("cannot start the counting proxy: {e}"))?;
    let proxied =
        through(url, proxy.port()).ok_or("cannot rewrite the URL to go through the proxy")?;
    let config = TransportConfig::from_url(&proxied)
        .map_err(|e| describe(&e))?
        .with_prefix(prefix.clone());
    let t = tokio::time::timeout(CONNECT_TIMEOUT, config.connect())
        .await
        .map_err(|_| "no connection through the proxy in time".to_string())?
        .map_err(|e| describe(&e))?;
    let result = async {
        let (first, rest) = packets.split_first().ok_or("no packets")?;
        t.deposit_encoded(first).await.map_err(|e| describe(&e))?;
        let (up0, down0) = proxy.bytes();
        for p in rest {
            t.deposit_encoded(p).await.map_err(|e| describe(&e))?;
            bar.inc(1);
        }
        let (up1, down1) = proxy.bytes();
        Ok::<_, String>((rest.len(), up1 - up0, down1 - down0))
    }
    .await;
    let _ = t.close().await;
    drop(t);
    // The client's connection tasks wind down in the background after close;
    // cutting the proxy under them at once makes them log a disconnect. Keep
    // it a little longer (the runtime drops it at exit anyway).
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(proxy);
    });
    let (m, up, down) = result?;
    if m == 0 {
        return Err("no packets".into());
    }
    let (up, down) = (up as f64 / m as f64, down as f64 / m as f64);
    if up < body_mean / 2.0 {
        return Err(
            "the client bypassed the counting proxy after bootstrap (the server advertises its own address)".into(),
        );
    }
    Ok(Envelope::Wire {
        up,
        down,
        packets: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("nats://127.0.0.1:14222"),
            Ok(("127.0.0.1".into(), 14222))
        );
        assert_eq!(
            endpoint("redis://localhost"),
            Ok(("localhost".into(), 6379))
        );
        assert!(endpoint("rediss://h:1").is_err());
        assert_eq!(
            through("redis://:pw@127.0.0.1:16379/0", 5555).as_deref(),
            Some("redis://:pw@127.0.0.1:5555/0")
        );
        assert_eq!(
            through("kafka://127.0.0.1:19092", 7).as_deref(),
            Some("kafka://127.0.0.1:7")
        );
    }

    #[tokio::test]
    async fn proxy_counts_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"ok").await.unwrap();
        });
        let proxy = CountingProxy::start(addr).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut reply = [0u8; 2];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ok");
        assert_eq!(proxy.bytes(), (5, 2));
        echo.await.unwrap();
    }
}
