//! Listening sockets with their process, from `/proc` alone (no `ss`): the pure parser of
//! `/proc/net/{tcp,tcp6,udp,udp6}`, the socket-inode → process map built from
//! `/proc/<pid>/fd`, and the diff of two snapshots into `listeners` changes.
//!
//! A TCP socket listens in state `0A` (LISTEN). A UDP socket "listens" when it is bound
//! and not connected: state `07` with remote port 0. Addresses in `/proc/net` are the raw
//! network-order bytes printed as host-order 32-bit hex words, so each word's native
//! bytes are the address bytes. A socket shared by several processes (pre-fork servers)
//! is attributed to the lowest pid; one that no readable process holds has no process.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// tcp, tcp6, udp, udp6.
    pub proto: String,
    /// Address, e.g. `0.0.0.0`, `127.0.0.1`, `::`.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// Process name (`comm`), when known.
    #[serde(default)]
    pub process: Option<String>,
    /// Process id, when known.
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Listener {
    /// What identifies a listener across snapshots: a restart (new pid) is not a change.
    fn key(&self) -> (&str, &str, u16, Option<&str>) {
        (&self.proto, &self.addr, self.port, self.process.as_deref())
    }
}

/// A socket from `/proc/net/*` before its process is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    /// Address.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// Socket inode (0 when the kernel gave none).
    pub inode: u64,
}

/// The files read and the protocol each holds.
pub const PROC_NET: [(&str, &str); 4] = [("tcp", "tcp"), ("tcp6", "tcp6"), ("udp", "udp"), ("udp6", "udp6")];

fn hex_addr(s: &str) -> Option<String> {
    match s.len() {
        8 => {
            let w = u32::from_str_radix(s, 16).ok()?;
            Some(Ipv4Addr::from(w.to_ne_bytes()).to_string())
        }
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&s[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(Ipv6Addr::from(bytes).to_string())
        }
        _ => None,
    }
}

fn endpoint(s: &str) -> Option<(String, u16)> {
    let (a, p) = s.split_once(':')?;
    Some((hex_addr(a)?, u16::from_str_radix(p, 16).ok()?))
}

/// The listening sockets of one `/proc/net/<proto>` file. Lines that do not parse are
/// counted in the second value.
pub fn parse_proc_net(text: &str, udp: bool) -> (Vec<RawSocket>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            let (addr, port) = endpoint(f.get(1)?)?;
            let (_, rport) = endpoint(f.get(2)?)?;
            let st = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            Some((addr, port, rport, st, inode))
        })();
        let Some((addr, port, rport, st, inode)) = parsed else {
            bad += 1;
            continue;
        };
        let listening = if udp { st == 0x07 && rport == 0 } else { st == 0x0A };
        if listening {
            out.push(RawSocket { addr, port, inode });
        }
    }
    (out, bad)
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Which process holds each of `wanted` socket inodes: the lowest pid, with its `comm`.
/// Reads `/proc/<pid>/fd` of every process it may read; others are skipped.
pub fn socket_owners(proc_root: &Path, wanted: &[u64]) -> HashMap<u64, (u32, String)> {
    let mut out: HashMap<u64, (u32, String)> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link.to_str().and_then(socket_inode) else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            if out.get(&inode).is_some_and(|(p, _)| *p <= pid) {
                continue;
            }
            let name = comm
                .get_or_insert_with(|| {
                    std::fs::read_to_string(e.path().join("comm")).map(|c| c.trim_end().to_string()).unwrap_or_default()
                })
                .clone();
            out.insert(inode, (pid, name));
        }
    }
    out
}

/// Every listening socket of this machine with its process, sorted, deduplicated.
/// `bad` gets the number of unreadable lines. Blocking: call it off the runtime.
pub fn snapshot(proc_root: &Path, bad: &mut usize) -> Result<Vec<Listener>, String> {
    let mut raw: Vec<(&str, RawSocket)> = Vec::new();
    let mut read_any = false;
    for (file, proto) in PROC_NET {
        let Ok(text) = std::fs::read_to_string(proc_root.join("net").join(file)) else {
            continue; // no IPv6 on this kernel, for instance
        };
        read_any = true;
        let (socks, b) = parse_proc_net(&text, proto.starts_with("udp"));
        *bad += b;
        raw.extend(socks.into_iter().map(|s| (proto, s)));
    }
    if !read_any {
        return Err(format!("cannot read {}/net/tcp", proc_root.display()));
    }
    let inodes: Vec<u64> = raw.iter().map(|(_, s)| s.inode).filter(|i| *i != 0).collect();
    let owners = socket_owners(proc_root, &inodes);
    let mut out: Vec<Listener> = raw
        .into_iter()
        .map(|(proto, s)| {
            let owner = owners.get(&s.inode);
            Listener {
                proto: proto.to_string(),
                addr: s.addr,
                port: s.port,
                process: owner.map(|(_, c)| c.clone()).filter(|c| !c.is_empty()),
                pid: owner.map(|(p, _)| *p),
            }
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.key() == b.key());
    Ok(out)
}

/// One row of `listeners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerChange {
    /// The socket (as last seen, for `closed`).
    pub listener: Listener,
    /// present, opened or closed.
    pub change: &'static str,
}

/// Changes from `old` to `new`; everything `present` when there is no `old`.
pub fn diff(old: Option<&[Listener]>, new: &[Listener]) -> Vec<ListenerChange> {
    let Some(old) = old else {
        return new.iter().map(|l| ListenerChange { listener: l.clone(), change: "present" }).collect();
    };
    let old_keys: BTreeMap<_, &Listener> = old.iter().map(|l| (l.key(), l)).collect();
    let new_keys: BTreeMap<_, &Listener> = new.iter().map(|l| (l.key(), l)).collect();
    let mut out: Vec<ListenerChange> = new_keys
        .iter()
        .filter(|(k, _)| !old_keys.contains_key(*k))
        .map(|(_, l)| ListenerChange { listener: (*l).clone(), change: "opened" })
        .collect();
    out.extend(
        old_keys
            .iter()
            .filter(|(k, _)| !new_keys.contains_key(*k))
            .map(|(_, l)| ListenerChange { listener: (*l).clone(), change: "closed" }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_give_listeners_only() {
        // Captured from this machine's /proc/net/tcp, plus hand-made v6 and UDP rows.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1525 1 000000007e28a9e7 100 0 0 10 0\n\
   1: 0100007F:D316 0100007F:80D1 06 00000000:00000000 03:00001230 00000000     0        0 0 3 000000004554dcdd\n\
   2: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 777 1 0\n\
   garbage\n";
        let (s, bad) = parse_proc_net(tcp, false);
        assert_eq!(bad, 1);
        assert_eq!(
            s,
            [
                RawSocket { addr: "0.0.0.0".into(), port: 2024, inode: 1525 },
                RawSocket { addr: "127.0.0.1".into(), port: 3306, inode: 777 }
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0\n\
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0\n";
        let (s, _) = parse_proc_net(tcp6, false);
        assert_eq!((s[0].addr.as_str(), s[0].port), ("::", 22));
        assert_eq!((s[1].addr.as_str(), s[1].port), ("::1", 8080));
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 3001 2 0 0\n\
  2: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3002 2 0 0\n";
        let (s, _) = parse_proc_net(udp, true);
        assert_eq!(
            s,
            [RawSocket { addr: "127.0.0.53".into(), port: 53, inode: 3001 }],
            "connected UDP is not listening"
        );
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[1]"), None);
    }

    #[test]
    fn a_restart_is_no_change_a_new_port_is() {
        let l = |port, pid| Listener {
            proto: "tcp".into(),
            addr: "0.0.0.0".into(),
            port,
            process: Some("sshd".into()),
            pid: Some(pid),
        };
        let old = vec![l(22, 100), l(80, 200)];
        let new = vec![l(22, 101), l(443, 300)];
        let d = diff(Some(&old), &new);
        let got: Vec<(u16, &str)> = d.iter().map(|c| (c.listener.port, c.change)).collect();
        assert_eq!(got, [(443, "opened"), (80, "closed")]);
        assert_eq!(diff(None, &new).len(), 2);
    }
}
