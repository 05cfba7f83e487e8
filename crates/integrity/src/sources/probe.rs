//! Is a PostgreSQL server answering? A probe opens a connection and sends the
//! 8-byte GSSENCRequest of the frontend protocol; a postmaster answers one byte,
//! `G` or `N`, before any authentication. The probe then hangs up, which the
//! server takes silently (no log line, no backend). Nothing is sent that could
//! log in or run anything.
//!
//! Every probe is bounded: name resolution, connection and answer together
//! get at most the timeout; [`probe_all`] probes servers in parallel threads
//! and returns at the deadline whatever is still pending as unreachable, so a
//! dead or black-holed server never holds the caller longer than the timeout.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `GSSENCRequest`: length 8, code 80877104.
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// Where a server listens: a host name or address, or a Unix socket directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub reachable: bool,
    /// Time to the answer (or to giving up), ms.
    pub latency_ms: f64,
    /// The address that answered, or the last one tried.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The targets of a libpq-style connection: `host` (or `hostaddr`) and `port`,
/// each possibly a comma list, with libpq's defaults (the Unix socket in
/// `default_socket_dir`, port 5432). A single port applies to every host.
pub fn targets(
    host: Option<&str>,
    hostaddr: Option<&str>,
    port: Option<&str>,
    default_socket_dir: &str,
) -> Result<Vec<Target>, String> {
    let split = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let hosts = match hostaddr.or(host).filter(|h| !h.trim().is_empty()) {
        Some(h) => split(h)
            .into_iter()
            .map(|h| {
                if h.is_empty() {
                    default_socket_dir.to_owned()
                } else {
                    h
                }
            })
            .collect(),
        None => vec![default_socket_dir.to_owned()],
    };
    let ports = match port.filter(|p| !p.trim().is_empty()) {
        Some(p) => split(p)
            .iter()
            .map(|p| {
                if p.is_empty() {
                    Ok(5432)
                } else {
                    p.parse::<u16>()
                }
            })
            .collect::<Result<Vec<u16>, _>>()
            .map_err(|_| format!("invalid port \"{}\"", port.unwrap_or_default()))?,
        None => vec![5432],
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(format!(
            "{} ports for {} hosts: give one port, or one per host",
            ports.len(),
            hosts.len()
        ));
    }
    Ok(hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| Target {
            host,
            port: ports[if ports.len() == 1 { 0 } else { i }],
        })
        .collect())
}

fn exchange(mut stream: impl Read + Write) -> Result<(), String> {
    stream
        .write_all(&GSSENC_REQUEST)
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    match answer[0] {
        b'G' | b'N' => Ok(()),
        other => Err(format!("not a PostgreSQL server (answered {other:#04x})")),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "timed out".to_owned())
}

fn probe_target(target: &Target, deadline: Instant) -> Result<String, String> {
    if target.host.starts_with('/') {
        let path = format!("{}/.s.PGSQL.{}", target.host, target.port);
        let stream =
            std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("{path}: {e}"))?;
        let left = remaining(deadline)?;
        stream
            .set_read_timeout(Some(left))
            .and_then(|_| stream.set_write_timeout(Some(left)))
            .map_err(|e| e.to_string())?;
        exchange(stream).map_err(|e| format!("{path}: {e}"))?;
        return Ok(path);
    }
    let addresses = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", target.host))?;
    let mut last = format!("{}: no address", target.host);
    for address in addresses {
        let attempt = (|| {
            let stream = TcpStream::connect_timeout(&address, remaining(deadline)?)
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let left = remaining(deadline)?;
            stream
                .set_read_timeout(Some(left))
                .and_then(|_| stream.set_write_timeout(Some(left)))
                .map_err(|e| e.to_string())?;
            exchange(stream)
        })();
        match attempt {
            Ok(()) => return Ok(address.to_string()),
            Err(e) => last = format!("{address}: {e}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last)
}

/// Probes `targets` in order until one answers, within `timeout` in all.
pub fn probe(targets: &[Target], timeout: Duration) -> Probe {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut outcome = Err("no host to probe".to_owned());
    for target in targets {
        outcome = probe_target(target, deadline);
        if outcome.is_ok() || Instant::now() >= deadline {
            break;
        }
    }
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(address) => Probe {
            reachable: true,
            latency_ms,
            address,
            error: None,
        },
        Err(e) => Probe {
            reachable: false,
            latency_ms,
            address: targets
                .last()
                .map(|t| format!("{}:{}", t.host, t.port))
                .unwrap_or_default(),
            error: Some(e),
        },
    }
}

/// Probes every server's targets in parallel; returns within `timeout` (plus
/// scheduling), a probe still running then counting as unreachable.
pub fn probe_all(servers: Vec<Vec<Target>>, timeout: Duration) -> Vec<Probe> {
    let deadline = Instant::now() + timeout;
    let (sender, receiver) = mpsc::channel();
    let count = servers.len();
    for (i, targets) in servers.iter().cloned().enumerate() {
        let thread_sender = sender.clone();
        // A probe stuck in name resolution outlives the deadline; its thread
        // is left to finish alone and its answer is ignored.
        let spawned = std::thread::Builder::new()
            .name("ruvector-probe".into())
            .spawn(move || {
                let _ = thread_sender.send((i, probe(&targets, timeout)));
            });
        if let Err(e) = spawned {
            let _ = sender.send((
                i,
                Probe {
                    reachable: false,
                    latency_ms: 0.0,
                    address: String::new(),
                    error: Some(format!("cannot start a probe: {e}")),
                },
            ));
        }
    }
    drop(sender);
    let mut found: Vec<Option<Probe>> = vec![None; count];
    while found.iter().any(Option::is_none) {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match receiver.recv_timeout(wait + Duration::from_millis(50)) {
            Ok((i, probe)) => found[i] = Some(probe),
            Err(_) => break,
        }
    }
    found
        .into_iter()
        .zip(servers)
        .map(|(probe, targets)| {
            probe.unwrap_or_else(|| Probe {
                reachable: false,
                latency_ms: timeout.as_secs_f64() * 1000.0,
                address: targets
                    .first()
                    .map(|t| format!("{}:{}", t.host, t.port))
                    .unwrap_or_default(),
                error: Some("timed out".into()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn local(port: u16) -> Vec<Target> {
        vec![Target {
            host: "127.0.0.1".into(),
            port,
        }]
    }

    /// A listener that answers `answer` to the first request, or never answers
    /// (it holds the connection open for a minute: only a probe's own timeout
    /// ends its wait before that).
    fn server(answer: Option<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 8];
                stream.read_exact(&mut request).unwrap();
                assert_eq!(request, GSSENC_REQUEST);
                match answer {
                    Some(a) => stream.write_all(&[a]).unwrap(),
                    None => std::thread::sleep(Duration::from_secs(60)),
                }
            }
        });
        port
    }

    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn a_postmaster_answer_is_reachable() {
        for answer in [b'N', b'G'] {
            let p = probe(&local(server(Some(answer))), Duration::from_secs(2));
            assert!(p.reachable && p.latency_ms >= 0.0, "{p:?}");
        }
    }

    #[test]
    fn refused_silent_and_foreign_servers_are_not() {
        let refused = probe(&local(closed_port()), Duration::from_secs(2));
        assert!(
            !refused.reachable && refused.error.as_deref().unwrap().contains("refused"),
            "{refused:?}"
        );
        // A silent server that never hangs up: the probe's own timeout ends
        // the exchange, and the probe closes the connection itself. (How long
        // a probe waits is `make bench`'s to report.)
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hung_up = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).unwrap();
            // Blocks until the client closes: 0 bytes, end of stream.
            stream.read(&mut [0u8; 1]).unwrap() == 0
        });
        let silent = probe(&local(port), Duration::from_millis(300));
        assert!(!silent.reachable, "{silent:?}");
        assert!(
            silent.error.as_deref().unwrap().contains("no answer"),
            "{silent:?}"
        );
        assert!(hung_up.join().unwrap(), "the probe closed the connection");
        let other = probe(&local(server(Some(b'H'))), Duration::from_secs(2));
        assert!(other.error.unwrap().contains("not a PostgreSQL server"));
    }

    #[test]
    fn the_next_host_is_tried_and_all_run_in_parallel() {
        let mut both = local(closed_port());
        both.extend(local(server(Some(b'N'))));
        assert!(probe(&both, Duration::from_secs(2)).reachable);

        // All at once: the answering server is reached while both silent
        // ones still hold their connections (probed one after the other, it
        // would be reached only once they had ended). It then lets them go.
        let holding = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let released = std::sync::Arc::new(std::sync::Barrier::new(3));
        let silent = || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (holding, released) = (holding.clone(), released.clone());
            std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 8];
                stream.read_exact(&mut request).unwrap();
                holding.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                released.wait();
            });
            port
        };
        let (first, second) = (silent(), silent());
        let answering = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = answering.local_addr().unwrap().port();
        let seen = {
            let (holding, released) = (holding.clone(), released.clone());
            std::thread::spawn(move || {
                let (mut stream, _) = answering.accept().unwrap();
                let mut request = [0u8; 8];
                stream.read_exact(&mut request).unwrap();
                // Both silent probes are connected by the time this one is
                // answered, or they never will be while it waits.
                while holding.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stream.write_all(b"N").unwrap();
                released.wait();
                true
            })
        };
        let found = probe_all(
            vec![local(first), local(second), local(port)],
            Duration::from_secs(60),
        );
        assert!(seen.join().unwrap());
        assert_eq!(
            found.iter().map(|p| p.reachable).collect::<Vec<_>>(),
            [false, false, true]
        );

        // One deadline ends every probe still waiting (a silent server would
        // hold each a minute): both come back unreachable, named as such.
        let found = probe_all(
            vec![local(server(None)), local(server(None))],
            Duration::from_millis(300),
        );
        for silent in &found {
            assert!(!silent.reachable, "{silent:?}");
            let error = silent.error.as_deref().unwrap();
            assert!(
                error.contains("no answer") || error == "timed out",
                "{silent:?}"
            );
        }
    }

    #[test]
    fn targets_follow_libpq_defaults() {
        let t = targets(None, None, None, "/run/postgresql").unwrap();
        assert_eq!(
            t,
            vec![Target {
                host: "/run/postgresql".into(),
                port: 5432
            }]
        );
        let t = targets(Some("a, b"), None, Some("6000"), "/tmp").unwrap();
        assert_eq!(
            t.iter()
                .map(|t| (t.host.as_str(), t.port))
                .collect::<Vec<_>>(),
            [("a", 6000), ("b", 6000)]
        );
        let t = targets(Some("a"), Some("127.0.0.1,::1"), Some("1,2"), "/tmp").unwrap();
        assert_eq!(
            t[1],
            Target {
                host: "::1".into(),
                port: 2
            }
        );
        assert!(targets(Some("a,b,c"), None, Some("1,2"), "/tmp").is_err());
        assert!(targets(Some("a"), None, Some("http"), "/tmp").is_err());
    }
}
