//! `AF_PACKET` receive sockets in one fanout group: the GRE receive path whose
//! per-packet kernel cost does not grow with the number of workers.
//!
//! Each raw `IPPROTO_GRE` socket gets its own clone of every GRE packet
//! (`raw_v4_input`), so N sharded raw sockets cost N clones and N filter runs
//! per packet. A fanout group instead hands each packet to exactly one of its
//! sockets, chosen by the flow hash (`PACKET_FANOUT_HASH`: the flow dissector
//! looks through GRE at the inner flow, so a flow stays on one worker and in
//! order). One socket per worker, all bound to the underlay device, each with
//! [`packet_filter`] (IPv4 GRE to our address, received for this host).
//!
//! Packet sockets see the device's packets before the IPv4 layer: fragments
//! (reassembled here by `PACKET_FANOUT_FLAG_DEFRAG`, before the group picks a
//! socket), and headers the IP layer would still reject (the caller checks
//! the outer header checksum). Whatever arrives for our address on another
//! device is left to one raw GRE socket with [`stray_filter`], which also
//! keeps the kernel from answering GRE with ICMP protocol-unreachable.
//!
//! Each socket has a `TPACKET_V2` receive ring ([`RxRing`]): the kernel
//! copies each packet straight into a frame of memory shared with us
//! (`tpacket_rcv`: no clone, no socket queue) and the worker takes frames
//! without a system call per batch. A packet larger than a frame also goes
//! to the socket's ordinary queue (`PACKET_COPY_THRESH`), from where it is
//! read whole, in order.
//!
//! Received packets start at the outer IPv4 header, as on a raw socket, so
//! the same datagram checks serve both. The sockets are `SOCK_RAW` with
//! `PACKET_VNET_HDR` (which the kernel allows only there): the kernel writes
//! a virtio-net header in front of each packet's link-layer header, its
//! offload metadata (`virtio_net_hdr_from_skb`). Packets arrive after GRO,
//! and where GRE GRO merged packets of one TCP flow, that header is the only
//! way to tell a merged packet (inner TCP checksum partial, GRE checksum the
//! first segment's) from a damaged one; [`RecvMeta::vnet`] carries it and
//! the link header's length to `crate::gso`. The link header itself is
//! skipped: frames are read from `tp_net`, queued copies through an iovec.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::batch::RecvMeta;

use socket2::{Domain, SockFilter, Socket, Type};

use super::bpf::packet_filter;

/// Fanout mode and flags of the group (the kernel's `PACKET_FANOUT` value
/// holds the group id in bits 0..16 and these from bit 16).
const FANOUT_MODE: u32 = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;

/// Upper bound on packets discarded by the start-up drain.
const DRAIN_LIMIT: u64 = 1 << 20;

/// One member of a fanout group of IPv4 packet sockets on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    sock: Socket,
    ring: RxRing,
}

/// `TPACKET_V2` in `enum tpacket_versions`.
const TPACKET_V2: libc::c_int = 1;
/// Ring geometry: 64 KiB blocks (the kernel allocates each block as one
/// run of pages) and 6 MiB in all, i.e. 3,840 frames of 1,632 bytes at the
/// usual underlay MTU: 15 ms of 1,500-byte packets at 3 Gb/s, about what
/// the 8 MiB socket buffer of the raw-socket path holds (skbs are charged
/// ~2.3 KiB each). Measured: 2,048 frames overflowed under a bulk TCP
/// transfer in the mesh suite (461 drops) and in the benchmark (up to 528
/// per run, with retransmits). The ring is allocated up front: 6 MiB of
/// kernel memory per worker, mapped into the process (resident).
const RING_BYTES: usize = 6 << 20;
const BLOCK_BYTES: usize = 64 << 10;
/// Frame header fields (`struct tpacket2_hdr`).
const TP_LEN: usize = 4;
const TP_SNAPLEN: usize = 8;
const TP_NET: usize = 14;
const TP_MAC: usize = 12;
/// Room in a frame before the packet: the 32-byte header and a
/// `sockaddr_ll`, aligned, the link header (at least 16), aligned, then the
/// virtio-net header (`tpacket_rcv`: `netoff` is 90 for Ethernet), with a
/// margin for longer link headers.
const FRAME_OVERHEAD: usize = 128;
/// `sizeof(struct virtio_net_hdr)`.
const VNET_LEN: usize = 10;
/// Longest link-layer header read from a queued copy (the rest of the
/// packet is then dropped as truncated).
const MAX_LINK: usize = 64;

/// The memory-mapped receive ring of one packet socket.
#[derive(Debug)]
pub struct RxRing {
    map: *mut u8,
    len: usize,
    frame_size: usize,
    block_size: usize,
    /// Frames per block (frames never straddle blocks).
    per_block: usize,
    frames: usize,
    /// The next frame to look at.
    head: usize,
}

// SAFETY: the mapping is owned by this value alone (one worker reads it;
// the kernel writes frames it owns per the status word) and is unmapped
// once, on drop; moving it to another thread changes nothing about that.
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `map`/`len` are the mapping created in `RxRing::new`,
        // unmapped exactly once.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

impl RxRing {
    /// Sets up a `TPACKET_V2` receive ring with frames for packets of up to
    /// `max_packet` bytes on `fd` and maps it.
    fn new(fd: RawFd, max_packet: usize) -> io::Result<RxRing> {
        // Frames are 16-byte aligned; a block is whole pages.
        let frame_size = (max_packet + FRAME_OVERHEAD).next_multiple_of(16);
        let block_size = BLOCK_BYTES.max(frame_size.next_multiple_of(4096));
        let blocks = (RING_BYTES / block_size).max(1);
        let per_block = block_size / frame_size;
        let req = libc::tpacket_req {
            tp_block_size: block_size as libc::c_uint,
            tp_block_nr: blocks as libc::c_uint,
            tp_frame_size: frame_size as libc::c_uint,
            tp_frame_nr: (blocks * per_block) as libc::c_uint,
        };
        super::batch::set_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2)?;
        // SAFETY: `req` is a valid tpacket_req and the length passed is its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = block_size * blocks;
        // SAFETY: maps the ring the kernel just created for `fd`; the result
        // is checked against MAP_FAILED before use.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing {
            map: map.cast(),
            len,
            frame_size,
            block_size,
            per_block,
            frames: req.tp_frame_nr as usize,
            head: 0,
        })
    }

    /// Where frame `i < frames` starts in the mapping.
    fn offset(&self, i: usize) -> usize {
        (i / self.per_block) * self.block_size + (i % self.per_block) * self.frame_size
    }

    /// Frame `i`'s status word, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: frame `i < frames` lies inside the mapping (`offset`
        // keeps frames inside their block) and starts at a multiple of 16
        // from the page-aligned mapping, so the u32 at its start is aligned;
        // it lives as long as `self`. The kernel and we hand the frame over
        // through this word only.
        unsafe { &*self.map.add(self.offset(i)).cast::<AtomicU32>() }
    }

    /// The bytes of frame `i` (only while its status says it is ours).
    fn frame(&self, i: usize) -> &[u8] {
        // SAFETY: frame `i` lies inside the mapping; while its status has
        // TP_STATUS_USER the kernel does not write it, and we hand it back
        // only after the last use of this slice (`take`).
        unsafe { std::slice::from_raw_parts(self.map.add(self.offset(i)), self.frame_size) }
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifindex` that receives IPv4 GRE
    /// addressed to `local` and joins fanout group `group`, or, with `None`,
    /// creates a new group with an id the kernel picks
    /// (`PACKET_FANOUT_FLAG_UNIQUEID`, so no other program's group is joined
    /// by accident). Returns the socket, the group id (to pass to the next
    /// member) and the number of packets discarded by the start-up drain.
    ///
    /// `max_packet` sizes the ring's frames (the largest packet expected:
    /// the underlay MTU); larger ones are read from the socket queue.
    ///
    /// In order: `socket(AF_PACKET, SOCK_RAW, 0)` (protocol 0 receives
    /// nothing yet); filter; `PACKET_VNET_HDR`; ring; buffer size; nonblocking; bind to
    /// (`ETH_P_IP`, `ifindex`); join the group; drain what the socket queued
    /// before it was a member (every other member got those packets too).
    pub fn open(
        ifindex: u32,
        local: Ipv4Addr,
        group: Option<u16>,
        rcvbuf: usize,
        max_packet: usize,
    ) -> io::Result<(PacketSocket, u16, u64)> {
        let sock = Socket::new(Domain::PACKET, Type::RAW, None).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (need CAP_NET_RAW)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("open packet socket: {e}{hint}"))
        })?;
        let ctx =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let filter: Vec<SockFilter> = packet_filter(local)
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        sock.attach_filter(&filter)
            .map_err(ctx("attach GRE filter to packet socket".into()))?;
        // Before the ring (the kernel refuses it after: EBUSY).
        super::batch::set_int(sock.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)
            .map_err(ctx("set PACKET_VNET_HDR on packet socket".into()))?;
        let ring = RxRing::new(sock.as_raw_fd(), max_packet).map_err(ctx(format!(
            "set up a receive ring for packets of {max_packet} bytes"
        )))?;
        // A packet larger than a frame is also queued whole on the socket.
        super::batch::set_int(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_COPY_THRESH,
            1,
        )
        .map_err(ctx("set PACKET_COPY_THRESH".into()))?;
        if rcvbuf > 0 {
            let val = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
            super::batch::set_int(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                val,
            )
            .or_else(|_| sock.set_recv_buffer_size(rcvbuf))
            .map_err(ctx(format!("set SO_RCVBUF {rcvbuf} on packet socket")))?;
        }
        sock.set_nonblocking(true)
            .map_err(ctx("set packet socket nonblocking".into()))?;
        bind_ipv4(sock.as_raw_fd(), ifindex).map_err(ctx(format!(
            "bind packet socket to interface index {ifindex}"
        )))?;
        // Bound to a device that is down, the socket does not receive (it
        // is not "running") and cannot join a group (EINVAL); the kernel
        // notes ENETDOWN as the socket's error. Say so instead.
        if let Ok(Some(e)) = sock.take_error() {
            if e.raw_os_error() == Some(libc::ENETDOWN) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("interface index {ifindex} is down ({e})"),
                ));
            }
        }
        let id = join_fanout(sock.as_raw_fd(), group).map_err(ctx(match group {
            Some(g) => format!("join packet fanout group {g}"),
            None => "create packet fanout group".into(),
        }))?;
        let mut s = PacketSocket { sock, ring };
        let drained = s.drain().map_err(ctx("drain packet socket".into()))?;
        Ok((s, id, drained))
    }

    /// Takes up to `bufs.len()` packets from the ring, each copied to the
    /// start of its buffer (a frame that holds only the truncated copy of a
    /// larger packet is replaced by the whole packet from the socket queue),
    /// and hands the frames back to the kernel. `Ok(n > 0)`, or
    /// `Err(WouldBlock)` when no packet is waiting. `losing`: set when the
    /// kernel marked a frame `TP_STATUS_LOSING` (it dropped packets because
    /// the ring was full; [`PacketSocket::drops`] counts them).
    pub fn recv<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        meta: &mut [RecvMeta],
        losing: &mut bool,
    ) -> io::Result<usize> {
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let i = self.ring.head;
            let status = self.ring.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let buf = bufs[n].as_mut();
            let f = self.ring.frame(i);
            let (mac, net) = (
                usize::from(read_u16(f, TP_MAC)),
                usize::from(read_u16(f, TP_NET)),
            );
            // The link header's length; the virtio-net header lies before it.
            let link = net.checked_sub(mac).filter(|_| mac >= VNET_LEN);
            let m = if status & libc::TP_STATUS_COPY != 0 {
                // The whole packet was queued before the frame was marked.
                // A first failure may be the socket's pending error (e.g.
                // ENETDOWN after a link flap), which that call consumed and
                // which must not leave this copy queued for the next frame.
                let fd = self.sock.as_raw_fd();
                let skip = link.map_or(MAX_LINK + 1, |l| l + VNET_LEN);
                match recv_into(fd, buf, skip).or_else(|e| match e.kind() {
                    io::ErrorKind::WouldBlock => Err(e),
                    _ => recv_into(fd, buf, skip),
                }) {
                    Ok(m) => m,
                    // Nothing queued (the socket buffer was full): only the
                    // truncated copy in the frame exists.
                    Err(_) => RecvMeta {
                        truncated: true,
                        ..RecvMeta::default()
                    },
                }
            } else {
                let (len, snap) = (
                    read_u32(f, TP_LEN) as usize,
                    read_u32(f, TP_SNAPLEN) as usize,
                );
                // tp_len and tp_snaplen count the link header too.
                let got = link.and_then(|l| {
                    let ip_len = len
                        .checked_sub(l)
                        .filter(|&n| snap == len && n <= buf.len())?;
                    Some((l, f.get(net..net + ip_len)?, f.get(mac - VNET_LEN..mac)?))
                });
                match got {
                    Some((l, data, v)) => {
                        let len = data.len();
                        buf[..len].copy_from_slice(data);
                        let mut vnet = [0u8; VNET_LEN];
                        vnet.copy_from_slice(v);
                        RecvMeta {
                            len,
                            segment: len,
                            vnet,
                            link_len: l as u16,
                            ..RecvMeta::default()
                        }
                    }
                    _ => RecvMeta {
                        truncated: true,
                        ..RecvMeta::default()
                    },
                }
            };
            *losing |= status & libc::TP_STATUS_LOSING != 0;
            meta[n] = m;
            self.ring.status(i).store(0, Ordering::Release); // TP_STATUS_KERNEL
            self.ring.head = (i + 1) % self.ring.frames;
            n += 1;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Packets the kernel dropped since the last call because the ring was
    /// full (`PACKET_STATISTICS`, which resets on read).
    pub fn drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::from(st.tp_drops))
    }

    /// Discards what arrived before the socket joined its group.
    fn drain(&mut self) -> io::Result<u64> {
        let mut n = 0;
        let mut scratch = [0u8; 1];
        let mut meta = [RecvMeta::default()];
        let mut losing = false;
        while n < DRAIN_LIMIT {
            match self.recv(&mut [&mut scratch[..]], &mut meta, &mut losing) {
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // No separate drain of the plain queue: each copy there belongs to a
        // frame (taken with it above), or to a frame the kernel has not
        // marked yet, whose copy must stay for it.
        Ok(n)
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Clears the socket's pending error (a link went down: ENETDOWN);
    /// called when poll reports an error on it.
    pub fn clear_error(&self) {
        let _ = self.sock.take_error();
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn bind_ipv4(fd: RawFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are valid.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sa.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: `sa` is a valid sockaddr_ll and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Joins group `group` (or creates one with a kernel-chosen id); returns the id.
fn join_fanout(fd: RawFd, group: Option<u16>) -> io::Result<u16> {
    let val = match group {
        Some(id) => u32::from(id) | (FANOUT_MODE << 16),
        None => (FANOUT_MODE | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
    };
    super::batch::set_int(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_FANOUT,
        val as libc::c_int,
    )?;
    let mut got: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `got` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // The low 16 bits are the group id.
    let id = (got as u32 & 0xffff) as u16;
    match group {
        Some(g) if g != id => Err(io::Error::other(format!(
            "joined group {id} instead of {g}"
        ))),
        _ => Ok(id),
    }
}

/// One datagram from the socket queue into `buf` (nonblocking): its first
/// `skip` bytes (the virtio-net header, then the link header) go to a
/// scratch buffer, the rest (from the IPv4 header) to `buf`. A `skip`
/// beyond the scratch buffer reads the datagram as truncated.
fn recv_into(fd: RawFd, buf: &mut [u8], skip: usize) -> io::Result<RecvMeta> {
    let mut head = [0u8; VNET_LEN + MAX_LINK];
    let head_len = skip.min(head.len());
    let mut iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head_len,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    let r = super::batch::retry_eintr(|| {
        // SAFETY: `msg` points at two iovecs over `head` and `buf`, both
        // valid for writes of their lengths for the call.
        unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) as isize }
    })?;
    let data = r.saturating_sub(head_len);
    let mut vnet = [0u8; VNET_LEN];
    vnet.copy_from_slice(&head[..VNET_LEN]);
    Ok(RecvMeta {
        len: data.min(buf.len()),
        truncated: data > buf.len() || skip > head.len() || r < head_len,
        segment: data.min(buf.len()),
        vnet,
        link_len: skip.saturating_sub(VNET_LEN) as u16,
        ..RecvMeta::default()
    })
}
