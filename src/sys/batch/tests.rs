//! The batch core against real sockets, without root: a unix datagram pair
//! for geometry and truncation, UDP on loopback for GSO/GRO, TOS and the
//! pending-error behaviour the worker's retry rests on.

use super::*;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

fn to(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

fn item(start: u32, len: u32) -> Transmit {
    Transmit {
        start,
        len,
        dst: to(9),
        segment: 0,
        tos: None,
    }
}

#[test]
fn capacity_and_datagram_counts() {
    assert_eq!(Batch::new(32).capacity(), 32);
    assert_eq!(Batch::new(0).capacity(), 0);
    assert_eq!(item(0, 1000).datagrams(), 1);
    let gso = Transmit {
        len: 2500,
        segment: 1000,
        ..item(0, 0)
    };
    assert_eq!(gso.datagrams(), 3);
}

#[test]
fn recv_places_lengths_and_truncation() {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    for (i, size) in [10usize, 240, 241, 300, 7].into_iter().enumerate() {
        b.send(&vec![i as u8 + 1; size]).unwrap();
    }
    let mut m = Batch::new(8);
    let mut bufs = vec![vec![0u8; 256]; 3];
    let mut meta = [RecvMeta::default(); 8];
    let n = m.recv(a.as_raw_fd(), &mut bufs, 16, &mut meta).unwrap();
    assert_eq!(n, 3, "bounded by the buffers");
    assert_eq!(
        meta[..3]
            .iter()
            .map(|m| (m.len, m.truncated))
            .collect::<Vec<_>>(),
        [(10, false), (240, false), (240, true)]
    );
    assert_eq!(meta[0].src, None, "not an IPv4 sender");
    assert!(bufs[0][..16].iter().all(|&x| x == 0), "offset respected");
    assert!(bufs[0][16..26].iter().all(|&x| x == 1));
    assert!(bufs[1][16..].iter().all(|&x| x == 2));
    let n = m.recv(a.as_raw_fd(), &mut bufs[..1], 0, &mut meta).unwrap();
    assert_eq!((n, meta[0].truncated), (1, true), "300 > 256 is truncated");
    let n = m.recv(a.as_raw_fd(), &mut bufs, 0, &mut meta).unwrap();
    assert_eq!((n, meta[0].len, meta[0].truncated), (1, 7, false));
    let e = m.recv(a.as_raw_fd(), &mut bufs, 0, &mut meta).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(m.rx_queue_drops(), 0);
    let inv = io::ErrorKind::InvalidInput;
    assert_eq!(
        m.recv(a.as_raw_fd(), &mut bufs, 256, &mut meta)
            .unwrap_err()
            .kind(),
        inv
    );
    assert_eq!(
        m.recv(a.as_raw_fd(), &mut bufs, 0, &mut [])
            .unwrap_err()
            .kind(),
        inv
    );
    let none: &mut [Vec<u8>] = &mut [];
    assert_eq!(
        m.recv(a.as_raw_fd(), none, 0, &mut meta)
            .unwrap_err()
            .kind(),
        inv
    );
}

#[test]
fn send_validates_ranges() {
    let arena = vec![0u8; 512];
    let mut m = Batch::new(4);
    assert_eq!(m.send(-1, &arena, &[]).unwrap(), 0);
    for bad in [
        item(512, 1),
        item(500, 13),
        item(u32::MAX, 1),
        item(0, u32::MAX),
    ] {
        let e = m.send(-1, &arena, &[bad, item(0, 1)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
    let e = Batch::new(0).send(-1, &arena, &[item(0, 1)]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "capacity 0");
    // A valid leading item reaches the kernel (EBADF on fd -1).
    let e = m
        .send(-1, &arena, &[item(0, 512), item(600, 1)])
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn control_messages_round_trip_through_writer_and_reader() {
    let mut ctrl = [0u64; CTRL_WORDS];
    // SAFETY: msghdr is a plain C struct; all-zero bytes are a valid value.
    let mut h: libc::msghdr = unsafe { mem::zeroed() };
    h.msg_control = ctrl.as_mut_ptr().cast();
    h.msg_controllen = CTRL_BYTES as _;
    let mut w = CmsgWriter::new(&mut h);
    w.push(libc::SOL_UDP, libc::UDP_SEGMENT, &1400u16.to_ne_bytes());
    w.push(libc::IPPROTO_IP, libc::IP_TOS, &0x2ei32.to_ne_bytes());
    // Too big for what is left: skipped, never written out of bounds.
    w.push(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &[0u8; 200]);
    w.finish();
    let got: Vec<(i32, i32, Vec<u8>)> = cmsgs(&h).map(|(l, t, d)| (l, t, d.to_vec())).collect();
    assert_eq!(
        got,
        [
            (
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                1400u16.to_ne_bytes().to_vec()
            ),
            (
                libc::IPPROTO_IP,
                libc::IP_TOS,
                0x2ei32.to_ne_bytes().to_vec()
            ),
        ]
    );
    // SAFETY: as above.
    let mut h2: libc::msghdr = unsafe { mem::zeroed() };
    h2.msg_control = ctrl.as_mut_ptr().cast();
    h2.msg_controllen = CTRL_BYTES as _;
    CmsgWriter::new(&mut h2).finish();
    assert_eq!(h2.msg_controllen, 0);
    assert!(h2.msg_control.is_null());
    assert_eq!(cmsgs(&h2).count(), 0);
}

fn udp(offload: bool) -> (std::net::UdpSocket, u16) {
    let s = std::net::UdpSocket::bind(to(0)).unwrap();
    s.set_nonblocking(true).unwrap();
    let fd = s.as_raw_fd();
    set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1).unwrap();
    if offload {
        let _ = set_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
    }
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// One GSO message of 3 segments and one plain datagram over loopback: 4
/// datagrams (or GRO messages of them) with sender and TOS reported.
#[test]
fn gso_send_and_receive_on_loopback() {
    let (rx, port) = udp(true);
    let (tx, _) = udp(false);
    let gso = set_int(tx.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
    let mut arena = vec![0u8; 400];
    for (i, b) in arena.iter_mut().enumerate() {
        *b = (i / 100) as u8;
    }
    let items = [
        Transmit {
            start: 0,
            len: 300,
            dst: to(port),
            segment: if gso { 100 } else { 0 },
            tos: Some(0x22),
        },
        Transmit {
            start: 300,
            len: 50,
            dst: to(port),
            segment: 0,
            tos: Some(0),
        },
    ];
    let mut m = Batch::new(4);
    assert_eq!(m.send(tx.as_raw_fd(), &arena, &items).unwrap(), 2);
    let mut bufs = vec![vec![0u8; 1000]; 8];
    let mut meta = vec![RecvMeta::default(); 8];
    let mut datagrams = Vec::new();
    for _ in 0..100 {
        match m.recv(rx.as_raw_fd(), &mut bufs, 0, &mut meta) {
            Ok(n) => {
                for i in 0..n {
                    let o = meta[i];
                    assert_eq!(o.src, Some(Ipv4Addr::LOCALHOST));
                    for d in bufs[i][..o.len].chunks(o.segment) {
                        datagrams.push((d.to_vec(), o.tos));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if datagrams.len() >= 2 + 2 * usize::from(gso) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let lens: Vec<usize> = datagrams.iter().map(|d| d.0.len()).collect();
    if gso {
        assert_eq!(lens, [100, 100, 100, 50]);
        assert!(datagrams[..3].iter().all(|d| d.1 == 0x22));
        assert_eq!(datagrams[1].0[0], 1);
    } else {
        assert_eq!(lens, [300, 50]);
        assert_eq!(datagrams[0].1, 0x22);
    }
    assert_eq!(datagrams.last().unwrap().1, 0);
}

/// The kernel behaviour behind the worker's one retry of a failed send or
/// receive (worker module doc, "Asynchronous errors"): with IP_RECVERR an
/// ICMP error about one datagram also becomes the socket's pending error,
/// which the next send reports (whatever it sends, wherever to) and clears.
#[test]
fn an_icmp_error_fails_the_next_send_once_and_the_retry_goes_out() {
    let (_rx, port) = udp(false);
    let closed = udp(false).1;
    let (tx, _) = udp(false);
    set_int(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVERR, 1).unwrap();
    let arena = [7u8; 8];
    let one = |p| {
        [Transmit {
            start: 0,
            len: 8,
            dst: to(p),
            segment: 0,
            tos: None,
        }]
    };
    let mut m = Batch::new(1);
    // To a closed port: ICMP port unreachable comes back (loopback: at once).
    assert_eq!(m.send(tx.as_raw_fd(), &arena, &one(closed)).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let e = m.send(tx.as_raw_fd(), &arena, &one(port)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    // That report cleared it: the same datagram goes out on the retry.
    assert_eq!(m.send(tx.as_raw_fd(), &arena, &one(port)).unwrap(), 1);
}
