//! Root-only kernel tests in throwaway network namespaces.
//!
//! Each test creates its own namespaces (`mfsys<pid><tag>`), enters them from
//! a dedicated thread with `setns(CLONE_NEWNET)` (sockets and TUN devices
//! belong to the namespace of the thread that creates them), and deletes them
//! on exit, also when a test fails. Nothing is configured in, and no packet is
//! sent from, the root namespace. Fails (never skips) when not root or without
//! `ip`.

mod common;
use common::{require_root, run, Namespaces};

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use meshfwd::sys::{
    interface_exists, interface_index, interface_mtu, ipv4_addrs, open_tun, shard_of, tun_mtu,
    Batch, IfAddr, PacketSocket, RawGreSocket, RawSender, RecvMeta, Transmit, TunConfig,
};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 2);
const BCAST: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 255);
const SLOT: usize = 2048;

fn ip(args: &[&str]) -> String {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    run(&full)
}

/// Runs `f` on a fresh thread that has entered netns `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: a valid namespace fd; only this thread switches.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes a GRE-in-IPv4 packet B -> A with outer IP id `id` into `buf`.
/// `full`: with a 20-byte inner IPv4 header (else only 8 bytes after GRE,
/// which `shard_of` sends to shard 0). Returns its length.
fn craft(buf: &mut [u8], rng: &mut Rng, id: u16, full: bool) -> usize {
    let opt_words = [0usize, 0, 0, 1, 2][(rng.next() % 5) as usize];
    let ihl = 20 + 4 * opt_words;
    let flags = [0x00u8, 0x80, 0x20, 0x10, 0xa0, 0x90, 0x30, 0xb0][(rng.next() % 8) as usize];
    let gre = 4 + 4 * (flags.count_ones() as usize);
    let rest = if full {
        20 + 16 + (rng.next() % 48) as usize
    } else {
        8
    };
    let len = ihl + gre + rest;
    let p = &mut buf[..len];
    p.fill(0);
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 47;
    p[12..16].copy_from_slice(&ADDR_B.octets());
    p[16..20].copy_from_slice(&ADDR_A.octets());
    p[20..ihl].fill(1); // IP option NOP
    p[ihl] = flags;
    p[ihl + 2..ihl + 4].copy_from_slice(&0x0800u16.to_be_bytes());
    let inner = ihl + gre;
    let word = rng.next();
    p[inner..inner + 8].copy_from_slice(&word.to_be_bytes());
    if full {
        p[inner] = 0x45;
        let w = rng.next().to_be_bytes();
        p[inner + 12..inner + 20].copy_from_slice(&w);
        p[inner + 9] = 17;
    }
    len
}

fn send_all(m: &mut Batch, tx: &impl AsRawFd, arena: &[u8], mut items: &[Transmit]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !items.is_empty() {
        match m.send(tx.as_raw_fd(), arena, items) {
            Ok(n) => {
                assert!(n > 0);
                items = &items[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Receives everything queued on `sock`: (reported length, first bytes);
/// a datagram truncated by the `slot`-byte buffer reports `usize::MAX`.
fn recv_all(m: &mut Batch, sock: &dyn AsRawFd, slot: usize, out: &mut Vec<(usize, Vec<u8>)>) {
    let mut bufs = vec![vec![0u8; slot]; m.capacity()];
    let mut meta = vec![RecvMeta::default(); m.capacity()];
    loop {
        match m.recv(sock.as_raw_fd(), &mut bufs, 0, &mut meta) {
            Ok(n) => {
                for (b, r) in bufs[..n].iter().zip(&meta) {
                    let len = if r.truncated { usize::MAX } else { r.len };
                    out.push((len, b[..r.len.min(slot)].to_vec()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn outer_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[4], p[5]])
}

struct Rx {
    sock: Box<dyn AsRawFd + Send>,
    mmsg: Batch,
    got: Vec<(usize, Vec<u8>)>,
}

/// Polls the two shard sockets until `want` packets arrived in total (then
/// a grace period to catch duplicates).
fn collect(shards: &mut [Rx], want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for rx in shards.iter_mut() {
            recv_all(&mut rx.mmsg, &*rx.sock, SLOT, &mut rx.got);
        }
        let total: usize = shards.iter().map(|r| r.got.len()).sum();
        if total >= want || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(100));
    for rx in shards.iter_mut() {
        recv_all(&mut rx.mmsg, &*rx.sock, SLOT, &mut rx.got);
    }
}

/// Two namespaces `mfsys<pid><tag>a`/`b` joined by a veth (`sdv<pid><tag>a`
/// in A with 192.168.16.1/24, `…b` in B with .2/24), B holding a permanent
/// neighbour entry for A (no ARP queueing, and dropping, of a first burst).
/// Returns the namespace guard, the namespace names and the veth names.
fn linked_pair(tag: &str) -> (Namespaces, String, String, String, String) {
    let pid = std::process::id();
    let (na, nb) = (format!("mfsys{pid}{tag}a"), format!("mfsys{pid}{tag}b"));
    let (va, vb) = (format!("sdv{pid}{tag}a"), format!("sdv{pid}{tag}b"));
    let mut ns = Namespaces::default();
    ns.add(&na);
    ns.add(&nb);
    // The veth ends are created directly inside the namespaces.
    ip(&[
        "link",
        "add",
        &va,
        "address",
        "02:00:00:00:16:01",
        "netns",
        &na,
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "address",
        "02:00:00:00:16:02",
        "netns",
        &nb,
    ]);
    ip(&["-n", &na, "addr", "add", "192.168.16.1/24", "dev", &va]);
    ip(&["-n", &nb, "addr", "add", "192.168.16.2/24", "dev", &vb]);
    ip(&["-n", &na, "link", "set", &va, "up"]);
    ip(&["-n", &nb, "link", "set", &vb, "up"]);
    // Static neighbour: no ARP queueing (and dropping) of the first burst.
    ip(&[
        "-n",
        &nb,
        "neigh",
        "replace",
        "192.168.16.1",
        "lladdr",
        "02:00:00:00:16:01",
        "dev",
        &vb,
        "nud",
        "permanent",
    ]);
    (ns, na, nb, va, vb)
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn gre_shards_deliver_each_packet_once() {
    require_root();
    let (_ns, na, nb, _va, _vb) = linked_pair("s");
    let pid = std::process::id();

    // ns A: two shard sockets, plus an accept-all socket with the smallest
    // receive buffer to exercise MSG_TRUNC reporting and SO_RXQ_OVFL.
    let (mut shards, mut ovf) = in_netns(&na, || {
        let shards: Vec<Rx> = (0..2)
            .map(|i| {
                let (sock, drained) = RawGreSocket::open(ADDR_A, i, 2, 4 << 20, 1 << 20).unwrap();
                assert_eq!(drained, 0);
                Rx {
                    sock: Box::new(sock),
                    mmsg: Batch::new(64),
                    got: Vec::new(),
                }
            })
            .collect();
        let (sock, drained) = RawGreSocket::open(ADDR_A, 0, 1, 1, 0).unwrap();
        assert_eq!(drained, 0);
        (
            shards,
            Rx {
                sock: Box::new(sock),
                mmsg: Batch::new(16),
                got: Vec::new(),
            },
        )
    });
    let (tx, _) = in_netns(&nb, || {
        RawGreSocket::open(ADDR_B, 0, 1, 0, 4 << 20).unwrap()
    });

    // 200 full packets + 10 too short for the inner header, ids 1..=210.
    const FULL: usize = 200;
    const SHORT: usize = 10;
    let mut rng = Rng(0x5eed_0000 ^ u64::from(pid));
    let mut arena = vec![0u8; SLOT * (FULL + SHORT + 8)];
    let mut sent: HashMap<u16, Vec<u8>> = HashMap::new();
    let mut items = Vec::new();
    for i in 0..FULL + SHORT + 8 {
        let id = i as u16 + 1;
        let slot = &mut arena[i * SLOT..(i + 1) * SLOT];
        let full = !(FULL..FULL + SHORT).contains(&i);
        let len = craft(slot, &mut rng, id, full);
        sent.insert(id, slot[..len].to_vec());
        items.push(Transmit {
            start: (i * SLOT) as u32,
            len: len as u32,
            dst: SocketAddrV4::new(ADDR_A, 0),
            segment: 0,
            tos: None,
        });
    }
    let mut txm = Batch::new(32);
    send_all(&mut txm, &tx, &arena, &items[..FULL + SHORT]);
    let mut delivered: Vec<u16> = (1..=(FULL + SHORT) as u16).collect();
    collect(&mut shards, delivered.len());

    // Accept-all socket: a few queued (truncated by a 64-byte slot), the rest
    // overflowed.
    recv_all(&mut ovf.mmsg, &*ovf.sock, 64, &mut ovf.got);
    let queued_first = ovf.got.len();
    assert!(
        queued_first > 0 && queued_first < FULL + SHORT,
        "{queued_first}"
    );

    // sendmmsg partial-send semantics on the real kernel. Broadcast fails
    // with EACCES (no SO_BROADCAST).
    let (e1, e2, e3, e4) = (
        FULL + SHORT,
        FULL + SHORT + 1,
        FULL + SHORT + 2,
        FULL + SHORT + 3,
    );
    let mut bcast = items[e2];
    bcast.dst = SocketAddrV4::new(BCAST, 0);
    let batch = [items[e1], bcast, items[e3]];
    assert_eq!(txm.send(tx.fd(), &arena, &batch).unwrap(), 1);
    let e = txm.send(tx.fd(), &arena, &batch[1..]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    assert_eq!(txm.send(tx.fd(), &arena, &batch[2..]).unwrap(), 1);
    let oob = Transmit {
        start: 1 << 30,
        ..items[e4]
    };
    assert_eq!(txm.send(tx.fd(), &arena, &[items[e4], oob]).unwrap(), 1);
    let e = txm.send(tx.fd(), &arena, &[oob, items[e4]]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    delivered.extend([e1, e3, e4].map(|i| i as u16 + 1));
    collect(&mut shards, delivered.len());
    recv_all(&mut ovf.mmsg, &*ovf.sock, 64, &mut ovf.got);

    // One last packet into the now-empty accept-all queue: it carries the
    // socket's final drop count.
    let last = FULL + SHORT + 4;
    send_all(&mut txm, &tx, &arena, &items[last..=last]);
    delivered.push(last as u16 + 1);
    collect(&mut shards, delivered.len());
    let deadline = Instant::now() + Duration::from_secs(2);
    while ovf.got.last().map(|(_, p)| outer_id(p)) != Some(last as u16 + 1) {
        assert!(
            Instant::now() < deadline,
            "last packet not seen on accept-all socket"
        );
        recv_all(&mut ovf.mmsg, &*ovf.sock, 64, &mut ovf.got);
        thread::sleep(Duration::from_millis(2));
    }

    // Every delivered packet exactly once across the shards, in shard_of's
    // shard, byte-identical after the outer header's kernel-filled fields.
    let mut seen: HashMap<u16, usize> = HashMap::new();
    for (k, rx) in shards.iter().enumerate() {
        assert_eq!(rx.mmsg.rx_queue_drops(), 0, "shard {k} dropped packets");
        for (len, p) in &rx.got {
            let id = outer_id(p);
            let orig = sent
                .get(&id)
                .unwrap_or_else(|| panic!("unknown packet id {id}"));
            assert_eq!(*len, orig.len(), "id {id}");
            let ihl = 4 * usize::from(p[0] & 0xf);
            assert_eq!(p[ihl..], orig[ihl..], "id {id}");
            assert_eq!(p[12..20], orig[12..20]);
            assert_eq!(shard_of(p, 2), k as u32, "id {id} on wrong shard");
            assert_eq!(shard_of(orig, 2), k as u32);
            *seen.entry(id).or_default() += 1;
        }
    }
    for id in &delivered {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "id {id} seen {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(seen.len(), delivered.len(), "unexpected extra packets");
    let per_shard: Vec<usize> = shards.iter().map(|r| r.got.len()).collect();
    assert!(
        per_shard.iter().all(|&n| n > 20),
        "lopsided shards {per_shard:?}"
    );
    for i in FULL..FULL + SHORT {
        assert_eq!(seen.get(&(i as u16 + 1)), Some(&1));
        assert!(
            shards[0]
                .got
                .iter()
                .any(|(_, p)| outer_id(p) == i as u16 + 1),
            "short packet not on shard 0"
        );
    }

    // Accept-all socket: MSG_TRUNC reported (as usize::MAX by recv_all); queued + dropped
    // accounts for every delivered packet.
    for (len, p) in &ovf.got {
        let orig = &sent[&outer_id(p)];
        if orig.len() > 64 {
            assert_eq!(*len, usize::MAX);
        } else {
            assert_eq!(*len, orig.len());
        }
    }
    let drops = ovf.mmsg.rx_queue_drops() as usize;
    assert!(drops > 0);
    assert_eq!(
        ovf.got.len() + drops,
        delivered.len(),
        "queued {} + dropped {drops}",
        ovf.got.len()
    );
    eprintln!(
        "gre: {} packets, shards {per_shard:?}; accept-all socket queued {} dropped {drops}",
        delivered.len(),
        ovf.got.len()
    );
}

/// The calling thread's namespace's `Icmp: OutDestUnreachs` counter.
fn icmp_out_dest_unreachs() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (
        icmp.next().expect("Icmp names"),
        icmp.next().expect("Icmp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDestUnreachs")
        .and_then(|(_, v)| v.parse().ok())
        .expect("OutDestUnreachs")
}

/// Splits the GRE packet `pkt` (20-byte outer header, no DF) into two IPv4
/// fragments at byte 1480 of its payload.
fn fragments(pkt: &[u8]) -> [Vec<u8>; 2] {
    let (hdr, payload) = pkt.split_at(20);
    let (a, b) = payload.split_at(1480);
    let frag = |flags_off: u16, part: &[u8]| {
        let mut f = hdr.to_vec();
        f[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
        f[6..8].copy_from_slice(&flags_off.to_be_bytes());
        f.extend_from_slice(part);
        f
    };
    [frag(0x2000, a), frag(1480 / 8, b)]
}

/// The fanout receive path (`--gre-receive fanout`) with 4 workers: every
/// GRE packet reaches exactly one of the group's 4 packet sockets, fragments
/// are reassembled first, flows spread over the group, and GRE for our
/// address that arrived on another interface (here: loopback) reaches the
/// raw GRE socket beside the group instead, also exactly once.
#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn gre_fanout_delivers_each_packet_once_to_one_of_4() {
    /// A fanout member and what its ring gave.
    struct Ring {
        sock: PacketSocket,
        got: Vec<(usize, Vec<u8>)>,
    }
    impl Ring {
        fn recv_all(&mut self) {
            let mut bufs = vec![vec![0u8; 4096]; 8];
            let mut meta = vec![RecvMeta::default(); 8];
            let mut losing = false;
            loop {
                match self.sock.recv(&mut bufs, &mut meta, &mut losing) {
                    Ok(n) => {
                        for (b, m) in bufs[..n].iter().zip(&meta) {
                            assert!(!m.truncated, "truncated");
                            self.got.push((m.len, b[..m.len].to_vec()));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("ring recv: {e}"),
                }
            }
            assert!(!losing, "the ring dropped packets");
        }
    }

    require_root();
    let (_ns, na, nb, va, _vb) = linked_pair("f");
    let pid = std::process::id();
    const WORKERS: usize = 4;
    let (mut group, mut stray, looped) = in_netns(&na, || {
        let ifindex = interface_index(&va).unwrap();
        let (stray, drained) = RawGreSocket::open_stray(ADDR_A, ifindex, 1 << 20).unwrap();
        assert_eq!(drained, 0);
        let mut id = None;
        let group: Vec<Ring> = (0..WORKERS)
            .map(|_| {
                let (sock, gid, drained) =
                    PacketSocket::open(ifindex, ADDR_A, id, 4 << 20, 1500).unwrap();
                assert_eq!(drained, 0);
                assert!(id.is_none_or(|i| i == gid));
                id = Some(gid);
                Ring {
                    sock,
                    got: Vec::new(),
                }
            })
            .collect();
        let looped = RawSender::open(ADDR_A, 0).unwrap();
        let stray = Rx {
            sock: Box::new(stray),
            mmsg: Batch::new(64),
            got: Vec::new(),
        };
        (group, stray, looped)
    });
    let (tx, _) = in_netns(&nb, || {
        RawGreSocket::open(ADDR_B, 0, 1, 0, 4 << 20).unwrap()
    });

    // 400 packets of random inner flows B -> A (ids 1..=400), 3 packets of
    // 2,900 bytes sent as two fragments each (ids 1001..=1003: reassembled,
    // they do not fit a ring frame and come through the socket queue), and
    // 5 GRE packets A sends to itself (ids 2001..=2005, through loopback).
    const FLOWS: usize = 400;
    const BIG: usize = 2900;
    let mut rng = Rng(0xfa40_0000 ^ u64::from(pid));
    let mut arena = vec![0u8; SLOT * (FLOWS + 6 + 5) + BIG];
    let mut sent: HashMap<u16, Vec<u8>> = HashMap::new();
    let mut items = Vec::new();
    let put = |arena: &mut Vec<u8>, items: &mut Vec<Transmit>, at: usize, p: &[u8]| {
        arena[at * SLOT..at * SLOT + p.len()].copy_from_slice(p);
        items.push(Transmit {
            start: (at * SLOT) as u32,
            len: p.len() as u32,
            dst: SocketAddrV4::new(ADDR_A, 0),
            segment: 0,
            tos: None,
        });
    };
    let mut buf = vec![0u8; SLOT];
    for i in 0..FLOWS {
        let len = craft(&mut buf, &mut rng, i as u16 + 1, true);
        sent.insert(i as u16 + 1, buf[..len].to_vec());
        put(&mut arena, &mut items, i, &buf[..len]);
    }
    for k in 0..3 {
        let id = 1001 + k as u16;
        let mut big = vec![0u8; BIG];
        big[..20].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 168, 16, 2, 192, 168, 16, 1,
        ]);
        big[2..4].copy_from_slice(&(BIG as u16).to_be_bytes());
        big[4..6].copy_from_slice(&id.to_be_bytes());
        big[22..24].copy_from_slice(&0x0800u16.to_be_bytes());
        big[24] = 0x45;
        for (j, b) in big[44..].iter_mut().enumerate() {
            *b = (j as u8) ^ (k as u8);
        }
        sent.insert(id, big.clone());
        for (j, f) in fragments(&big).iter().enumerate() {
            put(&mut arena, &mut items, FLOWS + 2 * k + j, f);
        }
    }
    let unreach_before = in_netns(&na, icmp_out_dest_unreachs);
    let mut txm = Batch::new(32);
    send_all(&mut txm, &tx, &arena, &items);
    let mut looped_items = Vec::new();
    for k in 0..5 {
        let id = 2001 + k as u16;
        let len = craft(&mut buf, &mut rng, id, true);
        // From A's own address (craft writes B's).
        buf[12..16].copy_from_slice(&ADDR_A.octets());
        sent.insert(id, buf[..len].to_vec());
        put(&mut arena, &mut looped_items, FLOWS + 6 + k, &buf[..len]);
    }
    in_netns(&na, || send_all(&mut txm, &looped, &arena, &looped_items));

    let want = FLOWS + 3 + 5;
    let deadline = Instant::now() + Duration::from_secs(5);
    let total = |g: &[Ring], s: &Rx| g.iter().map(|r| r.got.len()).sum::<usize>() + s.got.len();
    let poll = |group: &mut [Ring], stray: &mut Rx| {
        for r in group.iter_mut() {
            r.recv_all();
        }
        recv_all(&mut stray.mmsg, &*stray.sock, SLOT, &mut stray.got);
    };
    while total(&group, &stray) < want && Instant::now() < deadline {
        poll(&mut group, &mut stray);
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(100));
    poll(&mut group, &mut stray);

    let mut seen: HashMap<u16, usize> = HashMap::new();
    for (k, rx) in group.iter().enumerate() {
        assert_eq!(rx.sock.drops().unwrap(), 0, "socket {k} dropped packets");
        for (len, p) in &rx.got {
            let id = outer_id(p);
            let orig = sent.get(&id).unwrap_or_else(|| panic!("unknown id {id}"));
            assert!(id < 2000, "looped packet {id} on the fanout group");
            assert_eq!(*len, orig.len(), "id {id}");
            let ihl = 4 * usize::from(p[0] & 0xf);
            assert_eq!(p[ihl..*len], orig[ihl..], "id {id}");
            assert_eq!(p[6] & 0x3f, 0, "id {id}: a fragment, not reassembled");
            *seen.entry(id).or_default() += 1;
        }
    }
    for (len, p) in &stray.got {
        let id = outer_id(p);
        assert!(id > 2000, "packet {id} from the veth on the raw GRE socket");
        assert_eq!(*len, sent[&id].len());
        *seen.entry(id).or_default() += 1;
    }
    let mut ids: Vec<u16> = sent.keys().copied().collect();
    ids.sort_unstable();
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "id {id} seen {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(seen.len(), sent.len(), "unexpected extra packets");
    // The raw GRE socket beside the group keeps the kernel from answering
    // GRE with ICMP protocol-unreachable.
    assert_eq!(
        in_netns(&na, icmp_out_dest_unreachs),
        unreach_before,
        "A sent ICMP destination-unreachable"
    );
    let per_socket: Vec<usize> = group.iter().map(|r| r.got.len()).collect();
    assert!(
        per_socket.iter().filter(|&&n| n > 0).count() >= 3,
        "400 flows over 4 sockets: {per_socket:?}"
    );
    eprintln!(
        "fanout: {} packets over {WORKERS} sockets {per_socket:?}, {} via the raw GRE socket",
        want - stray.got.len(),
        stray.got.len()
    );
}

/// `auto` keeps IPsec hosts on the raw-socket path: the xfrm probe sees a
/// policy in the namespace it runs in, and nothing in a fresh one.
#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn xfrm_probe_sees_policies() {
    require_root();
    let pid = std::process::id();
    let name = format!("mfsys{pid}x");
    let mut ns = Namespaces::default();
    ns.add(&name);
    assert!(!in_netns(&name, || meshfwd::sys::netlink::xfrm_in_use().unwrap()));
    ip(&[
        "-n",
        &name,
        "xfrm",
        "policy",
        "add",
        "src",
        "192.168.16.1",
        "dst",
        "192.168.16.2",
        "proto",
        "gre",
        "dir",
        "in",
        "tmpl",
        "proto",
        "esp",
        "mode",
        "transport",
    ]);
    assert!(in_netns(&name, || meshfwd::sys::netlink::xfrm_in_use().unwrap()));
    ip(&["-n", &name, "xfrm", "policy", "flush"]);
    assert!(!in_netns(&name, || meshfwd::sys::netlink::xfrm_in_use().unwrap()));
}

fn link_flags(ns: &str, dev: &str) -> String {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev]);
    let start = out.find('<').expect("flags");
    let end = out.find('>').expect("flags");
    out[start + 1..end].to_owned()
}

fn is_up(ns: &str, dev: &str) -> bool {
    link_flags(ns, dev).split(',').any(|f| f == "UP")
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn tun_multiqueue_in_netns() {
    require_root();
    let pid = std::process::id();
    let nt = format!("mfsys{pid}t");
    let mut ns = Namespaces::default();
    ns.add(&nt);
    let (t1, t2, t3) = (
        format!("sdtun{pid}"),
        format!("sdtun{pid}p"),
        format!("sdtun{pid}s"),
    );
    let cfg = TunConfig {
        addr: Ipv4Addr::new(240, 16, 32, 1),
        prefix: 4,
        mtu: 1476,
        addr6: None,
    };

    // 1. Create with config, 2 queues; attach 2 more while held; traffic.
    let (queues, per_queue) = in_netns(&nt, || {
        let q = open_tun(&t1, 2, Some(&cfg), false).unwrap();
        assert_eq!(q.len(), 2);
        assert!(interface_exists(&t1));
        assert_eq!(interface_mtu(&t1).unwrap(), 1476);
        for d in &q {
            assert_eq!(tun_mtu(d).unwrap(), 1476);
            assert!(d.is_nonblocking().unwrap());
        }
        let want = IfAddr {
            ifname: t1.clone(),
            addr: cfg.addr,
            prefix: 4,
        };
        assert!(ipv4_addrs().unwrap().contains(&want));
        assert!(is_up(&nt, &t1));

        let more = open_tun(&t1, 2, None, false).unwrap();
        assert_eq!(
            interface_mtu(&t1).unwrap(),
            1476,
            "None must not touch the MTU"
        );
        let all: Vec<_> = q.into_iter().chain(more).collect();

        // 64 UDP flows into the TUN (routed by 240.0.0.0/4 dev tun). Other
        // packets (e.g. IPv6 autoconf) are ignored when counting.
        let socks: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind((cfg.addr, 0)).unwrap())
            .collect();
        for s in &socks {
            s.send_to(b"meshfwd", (Ipv4Addr::new(240, 16, 32, 2), 9))
                .unwrap();
        }
        let mut per_queue = vec![0usize; all.len()];
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(3);
        while per_queue.iter().sum::<usize>() < 64 && Instant::now() < deadline {
            for (i, d) in all.iter().enumerate() {
                loop {
                    match d.recv(&mut buf) {
                        Ok(n)
                            if n >= 28
                                && buf[0] == 0x45
                                && buf[9] == 17
                                && buf[16..20] == [240, 16, 32, 2] =>
                        {
                            per_queue[i] += 1
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("tun recv: {e}"),
                    }
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
        (all.len(), per_queue)
    });
    assert_eq!(queues, 4);
    assert_eq!(per_queue.iter().sum::<usize>(), 64, "{per_queue:?}");
    assert!(
        per_queue.iter().filter(|&&n| n > 0).count() >= 2,
        "one queue only: {per_queue:?}"
    );
    // All queues closed: the non-persistent device is gone.
    in_netns(&nt, || {
        let deadline = Instant::now() + Duration::from_secs(2);
        while interface_exists(&t1) {
            assert!(Instant::now() < deadline, "{t1} still exists");
            thread::sleep(Duration::from_millis(10));
        }
    });

    // 2. A pre-existing persistent multi-queue TUN is attached, not an error;
    //    without config nothing about it changes.
    ip(&[
        "-n",
        &nt,
        "tuntap",
        "add",
        "dev",
        &t2,
        "mode",
        "tun",
        "multi_queue",
    ]);
    assert!(!is_up(&nt, &t2));
    in_netns(&nt, || {
        let q = open_tun(&t2, 2, None, false).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(interface_mtu(&t2).unwrap(), 1500);
        assert!(!ipv4_addrs().unwrap().iter().any(|a| a.ifname == t2));
    });
    assert!(!is_up(&nt, &t2), "None must not bring the link up");
    let cfg2 = TunConfig {
        addr: Ipv4Addr::new(198, 18, 7, 1),
        prefix: 24,
        mtu: 1400,
        addr6: None,
    };
    in_netns(&nt, || {
        assert!(interface_exists(&t2), "persistent device survives close");
        let q = open_tun(&t2, 1, Some(&cfg2), false).unwrap();
        assert_eq!(tun_mtu(&q[0]).unwrap(), 1400);
        let want = IfAddr {
            ifname: t2.clone(),
            addr: cfg2.addr,
            prefix: 24,
        };
        assert!(ipv4_addrs().unwrap().contains(&want));
    });
    assert!(is_up(&nt, &t2));

    // 3. An existing single-queue TUN cannot be attached: clear error.
    ip(&["-n", &nt, "tuntap", "add", "dev", &t3, "mode", "tun"]);
    let e = in_netns(&nt, || match open_tun(&t3, 1, None, false) {
        Ok(_) => panic!("attached to a single-queue TUN"),
        Err(e) => e,
    });
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("open TUN queue {t3} (1/1): ")),
        "{msg}"
    );
    assert!(msg.contains("multi-queue"), "{msg}");
    eprintln!("tun: per-queue packets {per_queue:?}; error text: {msg}");

    for dev in [&t2, &t3] {
        let _ = Command::new("ip")
            .args(["-n", &nt, "link", "del", dev])
            .status();
    }
}
