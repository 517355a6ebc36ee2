//! The pure datapath: encapsulation and decapsulation decisions, no I/O.
//!
//! Egress (TUN → underlay), for a packet read into `buf[HEADROOM..]`:
//!  1. validate the inner IPv4 header;
//!  2. the destination must be in the overlay, on another VM, not a reserved host
//!     part, and that VM must be a unicast underlay address;
//!  3. the source must belong to this VM's block (we never relay foreign sources);
//!  4. write GRE and then the outer IPv4 header backwards into the headroom
//!     (src = local underlay, dst = peer VM, TTL 64, DF, TOS copied from inner);
//!  5. return the peer and the range of the finished outer packet.
//!
//! Ingress (underlay → TUN), for a packet from a raw socket (outer header included):
//!  1. validate the outer IPv4 header, protocol 47, outer source in the underlay;
//!  2. validate GRE: version 0, no routing/reserved bits, protocol 0x0800,
//!     checksum if present, key exactly as configured;
//!  3. validate the inner IPv4 header; its source must be an overlay address of
//!     the outer sender's VM (anti-spoofing), its destination on this VM;
//!  4. RFC 6040 ECN: CE on the outer header is copied into an ECT inner packet;
//!     CE over a Not-ECT inner packet is dropped;
//!  5. return the range of the inner packet, to be written to the TUN.
//!
//! Inner IPv6 (issue #17, GRE protocol 0x86DD) takes the same steps with the
//! IPv6 layout, in `datapath/v6.rs`, once [`Datapath::with_overlay6`] enables it.
//!
//! Every refusal is a [`DropReason`]; the I/O shell counts it. Nothing here panics.

use crate::layout::Layout;
use crate::wire::gre::{self, GreError, GrePacket, GreRepr};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::WireError;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

mod v6;
pub use v6::{ecn_after_decap, flow_hash6, is_special_source};

/// Bytes reserved in front of every packet read from the TUN, so outer headers
/// (20 IPv4 + up to 16 GRE) are written in place without copying the payload.
pub const HEADROOM: usize = 64;
/// TTL of outer packets, like a fresh packet of the host's own stack.
pub const OUTER_TTL: u8 = 64;
/// RFC 8086 destination port of GRE-in-UDP (Linux FOU direct GRE uses the same).
pub const GRE_UDP_PORT: u16 = 4754;
/// IPv4 + UDP header bytes in front of the GRE header in UDP mode.
pub const UDP_OUTER_LEN: usize = ipv4::HEADER_LEN + 8;
/// Largest UDP payload an IPv4 datagram can carry.
pub const MAX_UDP_PAYLOAD: usize = 65535 - UDP_OUTER_LEN;
/// Bits of the VM number that index the sequence table: 2^16 counters (256 KiB)
/// cover every VM of a /16 underlay exactly; with more VM bits, VMs that share
/// the low 16 bits share a counter, so each still sees increasing numbers
/// (with gaps), which is all RFC 2890 and Linux `iseq` ask for.
const SEQ_TABLE_BITS: u32 = 16;

/// How GRE travels between VMs. All VMs of a mesh use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// IP protocol 47 through raw sockets (RFC 2784/2890), like Linux ip_gre.
    #[default]
    Gre,
    /// GRE-in-UDP (RFC 8086): the same GRE header after a UDP header, like
    /// Linux FOU direct GRE encapsulation. The kernel writes IPv4 + UDP.
    Udp,
}

impl Encap {
    /// Bytes added on the wire around an inner packet behind a GRE header of
    /// `gre_len` bytes: IPv4 + GRE, or IPv4 + UDP + GRE. The one source of
    /// the MTU arithmetic (TUN MTU = underlay MTU − this).
    pub const fn overhead(self, gre_len: usize) -> usize {
        match self {
            Encap::Gre => ipv4::HEADER_LEN + gre_len,
            Encap::Udp => UDP_OUTER_LEN + gre_len,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Encap::Gre => "gre",
            Encap::Udp => "udp",
        }
    }
}

/// Per-destination-VM RFC 2890 sequence numbers: one fixed array indexed by the
/// VM bits of the peer's underlay address, allocated zeroed (pages are only
/// touched for VMs actually sent to), never growing with the number of peers.
#[derive(Debug)]
pub struct SeqTable {
    next: Box<[AtomicU32]>,
    index_mask: u32,
}

impl SeqTable {
    fn new(vm_bits: u32) -> SeqTable {
        let bits = vm_bits.min(SEQ_TABLE_BITS);
        let len = 1usize << bits;
        // Zeroed pages stay unmapped until a VM is sent to.
        let next = crate::sys::mem::zeroed_atomic_u32s(len);
        SeqTable {
            next,
            index_mask: (len - 1) as u32,
        }
    }

    /// The next sequence number towards `peer_vm_bits` (0, 1, 2, … per VM).
    #[inline]
    pub fn next(&self, peer_vm_bits: u32) -> u32 {
        // In bounds: the mask is len - 1.
        self.next[(peer_vm_bits & self.index_mask) as usize].fetch_add(1, Ordering::Relaxed)
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Why a packet was not forwarded. Each reason is one counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name used in logs, stats JSON and metrics labels.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an IPv4 header, the length it announces, or the GRE header.
    TooShort => "too_short",
    /// IP version is not 4 (nor 6 with the IPv6 overlay).
    NotIpv4 => "not_ipv4",
    /// IHL < 5 or total length smaller than the header.
    BadIpHeader => "bad_ip_header",
    /// Egress: destination outside the overlay prefix.
    DstNotInOverlay => "dst_not_in_overlay",
    /// Egress: destination inside this VM's own block (no such container here).
    DstLocalVm => "dst_local_vm",
    /// Destination host part 0 (a block's network address): refused on egress,
    /// and on ingress before it reaches the TUN (the kernel would route it
    /// straight back out).
    DstReserved => "dst_reserved",
    /// Egress: the destination's VM would be the underlay network or broadcast address.
    PeerNotUnicast => "peer_not_unicast",
    /// Egress: source is not an address of this VM's block.
    SrcNotLocal => "src_not_local",
    /// Egress: the encapsulated packet would exceed 65535 bytes.
    Oversize => "oversize",
    /// Ingress: outer protocol is not GRE.
    NotGre => "not_gre",
    /// Ingress: outer source outside the underlay prefix.
    OuterSrcNotUnderlay => "outer_src_not_underlay",
    /// Ingress: GRE version is not 0.
    GreVersion => "gre_version",
    /// Ingress: GRE routing bit or a reserved bit set.
    GreFlags => "gre_flags",
    /// Ingress: GRE payload is not IPv4 (protocol type ≠ 0x0800, nor 0x86DD
    /// with the IPv6 overlay).
    GreNotIpv4 => "gre_not_ipv4",
    /// Ingress: GRE checksum present and wrong.
    GreChecksum => "gre_checksum",
    /// Ingress: no GRE checksum although `--csum` requires one (Linux `csum`).
    GreChecksumMissing => "gre_checksum_missing",
    /// Ingress: key missing, unexpected or different from ours.
    KeyMismatch => "key_mismatch",
    /// Ingress: inner IPv4 header truncated or inconsistent.
    InnerMalformed => "inner_malformed",
    /// Ingress: inner source outside the overlay.
    InnerSrcNotOverlay => "inner_src_not_overlay",
    /// Ingress: inner source belongs to another VM than the outer sender.
    SpoofedSource => "spoofed_source",
    /// Ingress: inner destination not in this VM's block.
    InnerDstNotLocal => "inner_dst_not_local",
    /// Ingress: outer CE over a Not-ECT inner packet (RFC 6040).
    EcnCeNotEct => "ecn_ce_not_ect",
    /// Ingress: the datagram did not fit the receive buffer.
    Truncated => "truncated",
    /// Egress: a TUN super-packet (virtio-net header + TSO/USO payload) that
    /// could not be split into segments. Ingress (packet-socket receive): a
    /// packet the kernel merged (GRE GRO) or left with a partial checksum
    /// whose offload metadata does not fit the inner packet (not TCP/IPv4,
    /// checksum elsewhere than the inner transport header), or a TUN
    /// without offload, which cannot take it.
    OffloadMalformed => "offload_malformed",
    /// Egress: a DF packet larger than the underlay path allows (EMSGSIZE); the
    /// sender gets ICMP "fragmentation needed" unless rate-limited.
    TooBig => "too_big",
    /// Ingress: GRE of the other encapsulation than configured (raw IP protocol
    /// 47 in UDP mode, or GRE-in-UDP in GRE mode): the mesh is misconfigured.
    WrongEncap => "wrong_encap",
    /// Ingress: outer IPv4 header checksum wrong. Only a packet socket (the
    /// fanout receive path) sees such packets: the IPv4 layer drops them
    /// before any raw socket.
    BadIpChecksum => "bad_ip_checksum",
    /// Egress (IPv6): the destination's VM (bits 64-95) is outside the underlay.
    PeerNotUnderlay => "peer_not_underlay",
    /// Ingress (IPv6): inner source unspecified, link-local, multicast or
    /// IPv4-mapped: never a mesh address (a kernel GRE peer sends its own
    /// link-local neighbour discovery and MLD into the tunnel).
    InnerSrcSpecial => "inner_src_special",
    /// Ingress (IPv6): inner ICMPv6 neighbour discovery (types 133-137), which
    /// would configure this VM's TUN from afar.
    InnerNd => "inner_nd",
    /// Ingress (IPv6): a tunnel inside the tunnel (inner upper layer IPv4,
    /// IPv6 or GRE).
    InnerTunnel => "inner_tunnel",
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::TooShort,
            WireError::Version => DropReason::NotIpv4,
            WireError::Malformed => DropReason::BadIpHeader,
            WireError::TooLong => DropReason::Oversize,
        }
    }
}

/// A packet ready to send: `buf[start..start + len]` goes to underlay `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulated {
    pub peer: Ipv4Addr,
    pub start: usize,
    pub len: usize,
}

/// A packet ready for the TUN: `buf[start..start + len]` is the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated {
    pub start: usize,
    pub len: usize,
    /// The VM that sent it.
    pub peer: Ipv4Addr,
}

/// Per-node datapath configuration with everything precomputed for the hot path.
#[derive(Debug, Clone)]
pub struct Datapath {
    layout: Layout,
    local: Ipv4Addr,
    /// This VM's overlay block, as (network, mask).
    block_net: u32,
    block_mask: u32,
    overlay_net: u32,
    overlay_mask: u32,
    underlay_net: u32,
    underlay_mask: u32,
    key: Option<u32>,
    encap: Encap,
    /// Require a GRE checksum on receive (and send one).
    csum: bool,
    seqs: Option<Arc<SeqTable>>,
    gre: GreRepr,
    /// Outer IPv4 header with every per-node constant filled in.
    ip_template: [u8; ipv4::HEADER_LEN],
    /// One's-complement sum of the template's constant words.
    ip_template_sum: u64,
    /// The GRE header, identical for every packet without checksum or sequence.
    gre_template: [u8; gre::MAX_LEN],
    /// The IPv6 overlay, when enabled ([`Datapath::with_overlay6`]).
    overlay6: Option<v6::Overlay6>,
}

impl Datapath {
    /// `local` must be a unicast address inside the layout's underlay
    /// (see [`Layout::check_local`]).
    pub fn new(layout: Layout, local: Ipv4Addr, key: Option<u32>) -> Datapath {
        let block = layout
            .block(local)
            .unwrap_or_else(|| crate::layout::Cidr::new(Ipv4Addr::BROADCAST, 32).unwrap());
        let gre = GreRepr {
            protocol: gre::PROTO_IPV4,
            checksum: false,
            key,
            seq: None,
        };
        let mut gre_template = [0u8; gre::MAX_LEN];
        gre.emit(&mut gre_template[..gre.header_len()])
            .expect("template fits");
        let mut ip_template = [0u8; ipv4::HEADER_LEN];
        Ipv4Repr {
            src: local,
            dst: Ipv4Addr::UNSPECIFIED,
            protocol: ipv4::PROTO_GRE,
            tos: 0,
            ttl: OUTER_TTL,
            dont_frag: true,
            ident: 0,
            payload_len: 0,
        }
        .emit(&mut ip_template)
        .expect("template fits");
        ip_template[2..4].copy_from_slice(&[0, 0]);
        ip_template[10..12].copy_from_slice(&[0, 0]);
        Datapath {
            layout,
            local,
            block_net: block.addr().into(),
            block_mask: block.mask(),
            overlay_net: layout.overlay().addr().into(),
            overlay_mask: layout.overlay().mask(),
            underlay_net: layout.underlay().addr().into(),
            underlay_mask: layout.underlay().mask(),
            key,
            encap: Encap::Gre,
            csum: false,
            seqs: None,
            gre,
            ip_template,
            ip_template_sum: crate::wire::checksum::sum(&ip_template, 0),
            gre_template,
            overlay6: None,
        }
    }

    /// Sets the encapsulation and the GRE options: `csum` sends checksums and
    /// requires them on receive (Linux `csum`); `seq` sends RFC 2890 sequence
    /// numbers, one counter per destination VM (shared by clones of this
    /// datapath). Received sequence numbers are accepted and not checked.
    pub fn with_options(mut self, encap: Encap, csum: bool, seq: bool) -> Datapath {
        self.encap = encap;
        self.csum = csum;
        self.gre.checksum = csum;
        self.gre.seq = seq.then_some(0);
        self.seqs = seq.then(|| Arc::new(SeqTable::new(32 - self.underlay_mask.count_ones())));
        self.gre_template = [0; gre::MAX_LEN];
        let hl = self.gre.header_len();
        // Checksum and sequence fields stay zero in the template; they are
        // written per packet.
        self.gre_template[..2].copy_from_slice(&self.gre.flags().to_be_bytes());
        self.gre_template[2..4].copy_from_slice(&gre::PROTO_IPV4.to_be_bytes());
        if let Some(k) = self.key {
            let at = gre::BASE_LEN + 4 * usize::from(csum);
            self.gre_template[at..at + 4].copy_from_slice(&k.to_be_bytes());
        }
        debug_assert!(hl <= gre::MAX_LEN);
        self
    }

    pub fn encap(&self) -> Encap {
        self.encap
    }

    pub fn csum(&self) -> bool {
        self.csum
    }

    pub fn seq(&self) -> bool {
        self.seqs.is_some()
    }

    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    pub fn key(&self) -> Option<u32> {
        self.key
    }

    /// Bytes added to each packet on the wire: IPv4 + GRE (24 plain, +4 per
    /// option) or IPv4 + UDP + GRE in UDP mode (32 plain).
    pub fn overhead(&self) -> usize {
        self.encap.overhead(self.gre.header_len())
    }

    /// Bytes meshfwd itself writes in front of an inner packet (and finds in
    /// front of it on receive): outer IPv4 + GRE with raw sockets, GRE alone in
    /// UDP mode (the kernel adds IPv4 + UDP).
    pub fn header_len(&self) -> usize {
        match self.encap {
            Encap::Gre => ipv4::HEADER_LEN + self.gre.header_len(),
            Encap::Udp => self.gre.header_len(),
        }
    }

    #[inline]
    fn is_local_block(&self, a: u32) -> bool {
        a & self.block_mask == self.block_net
    }

    /// The egress decision alone: which VM an inner packet goes to.
    #[inline]
    pub fn egress(&self, inner: &[u8]) -> Result<Ipv4Addr, DropReason> {
        if let Some(o6) = self.overlay6_for(inner) {
            return Ok(self.route6(o6, inner)?.peer);
        }
        let ip = Ipv4Packet::new_checked(inner)?;
        self.route(&ip)
    }

    /// The IPv6 overlay, when it is enabled and `inner` is IPv6.
    #[inline]
    fn overlay6_for(&self, inner: &[u8]) -> Option<&v6::Overlay6> {
        self.overlay6
            .as_ref()
            .filter(|_| inner.first().is_some_and(|b| b >> 4 == 6))
    }

    #[inline]
    fn route<T: AsRef<[u8]>>(&self, ip: &Ipv4Packet<T>) -> Result<Ipv4Addr, DropReason> {
        let dst = ip.dst_raw();
        if dst & self.overlay_mask != self.overlay_net {
            return Err(DropReason::DstNotInOverlay);
        }
        if self.is_local_block(dst) {
            return Err(DropReason::DstLocalVm);
        }
        if dst & !self.block_mask == 0 {
            return Err(DropReason::DstReserved);
        }
        let peer = self.layout.vm_of_raw(dst);
        let vm_bits = peer & !self.underlay_mask;
        if vm_bits == 0 || vm_bits == !self.underlay_mask {
            return Err(DropReason::PeerNotUnicast);
        }
        if !self.is_local_block(ip.src_raw()) {
            return Err(DropReason::SrcNotLocal);
        }
        Ok(Ipv4Addr::from(peer))
    }

    /// Egress decision plus header write. The inner packet is `buf[headroom..headroom + len]`
    /// (`headroom ≥ header_len()`); the headers meshfwd writes (outer IPv4 + GRE,
    /// or GRE alone in UDP mode) go just in front of it.
    #[inline]
    pub fn encapsulate(
        &self,
        buf: &mut [u8],
        headroom: usize,
        len: usize,
    ) -> Result<Encapsulated, DropReason> {
        let hl = self.header_len();
        if headroom < hl {
            // A programming error of the caller, but never a panic on the hot path.
            return Err(DropReason::Oversize);
        }
        let inner_buf = buf
            .get(headroom..headroom.saturating_add(len))
            .ok_or(DropReason::TooShort)?;
        let (peer, inner_len, tos, protocol) = match self.overlay6_for(inner_buf) {
            Some(o6) => {
                let r = self.route6(o6, inner_buf)?;
                (r.peer, r.len, r.traffic_class, gre::PROTO_IPV6)
            }
            None => {
                let ip = Ipv4Packet::new_checked(inner_buf)?;
                let peer = self.route(&ip)?;
                (peer, usize::from(ip.total_len()), ip.tos(), gre::PROTO_IPV4)
            }
        };
        let start = headroom - hl;
        let total = hl + inner_len;
        if total + self.overhead() - hl > usize::from(u16::MAX) {
            return Err(DropReason::Oversize);
        }
        let gre_at = match self.encap {
            Encap::Gre => {
                self.write_outer_ip(&mut buf[start..start + ipv4::HEADER_LEN], tos, total, peer);
                start + ipv4::HEADER_LEN
            }
            Encap::Udp => start,
        };
        self.write_gre(&mut buf[gre_at..headroom + inner_len], peer, protocol);
        Ok(Encapsulated {
            peer,
            start,
            len: total,
        })
    }

    /// Outer IPv4 from the template: only TOS, total length and destination
    /// vary, so the checksum is the template's sum plus those three words.
    #[inline]
    fn write_outer_ip(&self, hdr: &mut [u8], tos: u8, total: usize, peer: Ipv4Addr) {
        hdr.copy_from_slice(&self.ip_template);
        hdr[1] = tos;
        hdr[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        hdr[16..20].copy_from_slice(&peer.octets());
        let d = u32::from(peer);
        let sum = self.ip_template_sum
            + u64::from(tos)
            + total as u64
            + u64::from(d >> 16)
            + u64::from(d & 0xffff);
        let c = !crate::wire::checksum::fold(sum);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// Writes the GRE header at the front of `g` (= GRE header ‖ inner packet):
    /// the template with `protocol`, then the sequence number and the
    /// checksum if configured.
    #[inline]
    fn write_gre(&self, g: &mut [u8], peer: Ipv4Addr, protocol: u16) {
        let gl = self.gre.header_len();
        g[..gl].copy_from_slice(&self.gre_template[..gl]);
        g[2..4].copy_from_slice(&protocol.to_be_bytes());
        if let Some(seqs) = &self.seqs {
            let at = gl - 4;
            let s = seqs.next(u32::from(peer) & !self.underlay_mask);
            g[at..at + 4].copy_from_slice(&s.to_be_bytes());
        }
        if self.csum {
            let c = crate::wire::checksum::checksum(g);
            g[4..6].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// The ingress decision for `buf[..len]` as received from a raw socket (outer
    /// IPv4 header included). May rewrite the inner ECN bits (RFC 6040).
    #[inline]
    pub fn decapsulate(&self, buf: &mut [u8], len: usize) -> Result<Decapsulated, DropReason> {
        self.decapsulate_ip(buf, len, true)
    }

    /// [`Datapath::decapsulate`], with the GRE checksum (if any) verified
    /// only when `gre_csum`.
    #[inline]
    fn decapsulate_ip(
        &self,
        buf: &mut [u8],
        len: usize,
        gre_csum: bool,
    ) -> Result<Decapsulated, DropReason> {
        let outer_buf = buf.get(..len).ok_or(DropReason::Truncated)?;
        let outer = Ipv4Packet::new_checked(outer_buf)?;
        if outer.protocol() != ipv4::PROTO_GRE {
            return Err(DropReason::NotGre);
        }
        if self.encap != Encap::Gre {
            return Err(DropReason::WrongEncap);
        }
        let sender = outer.src_raw();
        let outer_ecn = outer.ecn();
        let gre_start = outer.header_len();
        let gre_end = usize::from(outer.total_len());
        self.decapsulate_gre(buf, gre_start, gre_end, sender, outer_ecn, gre_csum)
    }

    /// [`Datapath::decapsulate`] for a packet taken from the link layer (a
    /// packet socket), before the IPv4 layer has checked it: the outer
    /// header checksum is verified first, as `ip_rcv` would.
    #[inline]
    pub fn decapsulate_link(&self, buf: &mut [u8], len: usize) -> Result<Decapsulated, DropReason> {
        self.decapsulate_link_with(buf, len, true)
    }

    /// The outer IPv4 header checksum `ip_rcv` would verify, then
    /// [`Datapath::decapsulate_ip`] (`gre_csum`: verify a GRE checksum).
    #[inline]
    fn decapsulate_link_with(
        &self,
        buf: &mut [u8],
        len: usize,
        gre_csum: bool,
    ) -> Result<Decapsulated, DropReason> {
        let outer = Ipv4Packet::new_checked(buf.get(..len).ok_or(DropReason::Truncated)?)?;
        if !outer.verify_checksum() {
            return Err(DropReason::BadIpChecksum);
        }
        self.decapsulate_ip(buf, len, gre_csum)
    }

    /// [`Datapath::decapsulate_link`] for a packet the kernel merged from
    /// several (GRE GRO), as its offload metadata says (`crate::gso`): the
    /// merged packet's GRE checksum is its first segment's, and the kernel
    /// verified every segment's before merging (it never merges one that
    /// fails), so it is not verified again. Every other check runs on the
    /// merged headers, which all the segments share: GRO merges only
    /// packets with the same outer addresses, GRE flags and key, and inner
    /// addresses. Only for packets whose metadata says they were merged.
    #[inline]
    pub fn decapsulate_link_merged(
        &self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Decapsulated, DropReason> {
        self.decapsulate_link_with(buf, len, false)
    }

    /// The ingress decision for a GRE-in-UDP payload `buf[..len]` (GRE header
    /// first) from underlay address `sender`, whose outer IPv4 TOS was `outer_tos`.
    #[inline]
    pub fn decapsulate_udp(
        &self,
        buf: &mut [u8],
        len: usize,
        sender: Ipv4Addr,
        outer_tos: u8,
    ) -> Result<Decapsulated, DropReason> {
        if buf.len() < len {
            return Err(DropReason::Truncated);
        }
        if self.encap != Encap::Udp {
            return Err(DropReason::WrongEncap);
        }
        self.decapsulate_gre(buf, 0, len, u32::from(sender), outer_tos & 3, true)
    }

    /// Checks shared by both encapsulations: GRE at `buf[gre_start..gre_end]`
    /// sent by underlay address `sender` with outer ECN bits `outer_ecn`.
    #[inline]
    fn decapsulate_gre(
        &self,
        buf: &mut [u8],
        gre_start: usize,
        gre_end: usize,
        sender: u32,
        outer_ecn: u8,
        gre_csum: bool,
    ) -> Result<Decapsulated, DropReason> {
        if sender & self.underlay_mask != self.underlay_net {
            return Err(DropReason::OuterSrcNotUnderlay);
        }
        let gre_buf = buf.get(gre_start..gre_end).ok_or(DropReason::TooShort)?;
        let g = GrePacket::new_checked(gre_buf).map_err(|e| match e {
            GreError::Truncated => DropReason::TooShort,
            GreError::Version => DropReason::GreVersion,
            GreError::Flags => DropReason::GreFlags,
        })?;
        let overlay6 = match (g.protocol(), self.overlay6.as_ref()) {
            (gre::PROTO_IPV4, _) => None,
            (gre::PROTO_IPV6, Some(o6)) => Some(o6),
            _ => return Err(DropReason::GreNotIpv4),
        };
        if self.csum && !g.has_checksum() {
            return Err(DropReason::GreChecksumMissing);
        }
        if gre_csum && !g.verify_checksum() {
            return Err(DropReason::GreChecksum);
        }
        if g.key() != self.key {
            return Err(DropReason::KeyMismatch);
        }
        let inner_start = gre_start + g.header_len();
        if let Some(o6) = overlay6 {
            return self.decapsulate6(o6, buf, inner_start, gre_end, sender, outer_ecn);
        }
        let inner = Ipv4Packet::new_checked(&buf[inner_start..gre_end])
            .map_err(|_| DropReason::InnerMalformed)?;
        let src = inner.src_raw();
        if src & self.overlay_mask != self.overlay_net {
            return Err(DropReason::InnerSrcNotOverlay);
        }
        if self.layout.vm_of_raw(src) != sender {
            return Err(DropReason::SpoofedSource);
        }
        let dst = inner.dst_raw();
        if !self.is_local_block(dst) {
            return Err(DropReason::InnerDstNotLocal);
        }
        if dst & !self.block_mask == 0 {
            return Err(DropReason::DstReserved);
        }
        let inner_len = usize::from(inner.total_len());
        let inner_ecn = inner.ecn();
        if outer_ecn == ipv4::ECN_CE && inner_ecn != ipv4::ECN_CE {
            if inner_ecn == ipv4::ECN_NOT_ECT {
                return Err(DropReason::EcnCeNotEct);
            }
            Ipv4Packet::new_unchecked(&mut buf[inner_start..inner_start + inner_len])
                .set_ecn(ipv4::ECN_CE);
        }
        Ok(Decapsulated {
            start: inner_start,
            len: inner_len,
            peer: Ipv4Addr::from(sender),
        })
    }
}

/// A hash of the inner flow of IPv4 packet `inner` (addresses, protocol and,
/// for unfragmented TCP/UDP/SCTP, the ports), for choosing the GRE-in-UDP source
/// port (RFC 8086 entropy): every packet of a flow hashes alike. Fragments
/// hash on addresses and protocol only. An IPv6 packet hashes with
/// [`flow_hash6`]. Never panics; garbage hashes to 0.
#[inline]
pub fn flow_hash(inner: &[u8]) -> u32 {
    let Ok(ip) = Ipv4Packet::new_checked(inner) else {
        return flow_hash6(inner);
    };
    let proto = ip.protocol();
    let mut h = ip.src_raw() ^ ip.dst_raw().rotate_left(16) ^ u32::from(proto) << 8;
    let fragment = ip.more_frags() || ip.frag_offset() != 0;
    if !fragment && matches!(proto, 6 | 17 | 132) {
        if let Some(p) = ip.payload().get(..4) {
            h ^= u32::from_be_bytes([p[0], p[1], p[2], p[3]]).rotate_left(7);
        }
    }
    finalise_hash(h)
}

/// MurmurHash3's finaliser: every input bit affects every output bit.
#[inline]
fn finalise_hash(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// What to do with an encapsulated packet the underlay refused as too big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBigAction {
    /// Inner DF set: tell the inner source (ICMP frag-needed) and drop.
    FragNeeded,
    /// Inner DF clear: fragment the inner packet to fit and encapsulate each
    /// fragment (outer DF stays set). This is what a Linux GRE device with the
    /// default `pmtudisc` amounts to: the IP layer fragments non-DF packets to
    /// the tunnel MTU before encapsulation. (A raw IP_HDRINCL send is never
    /// fragmented by the kernel, whatever the DF bit says.)
    Fragment,
    /// Never answer with ICMP about an ICMP error or a non-first fragment.
    DropSilently,
}

impl Datapath {
    /// Decides how to handle an outer packet `outer` (as built by
    /// [`Datapath::encapsulate`]) that failed with EMSGSIZE.
    pub fn too_big_action(&self, outer: &[u8]) -> TooBigAction {
        let Some(inner) = outer.get(self.header_len()..) else {
            return TooBigAction::DropSilently;
        };
        if self.overlay6_for(inner).is_some() {
            return self.too_big_action6(inner);
        }
        let Ok(ip) = Ipv4Packet::new_checked(inner) else {
            return TooBigAction::DropSilently;
        };
        if !ip.dont_frag() {
            return TooBigAction::Fragment;
        }
        if ip.frag_offset() != 0 {
            return TooBigAction::DropSilently;
        }
        if ip.protocol() == ipv4::PROTO_ICMP {
            // RFC 1812 4.3.2.7: no ICMP error about an ICMP error.
            let t = ip.payload().first().copied().unwrap_or(255);
            if matches!(t, 3 | 4 | 5 | 11 | 12) {
                return TooBigAction::DropSilently;
            }
        }
        TooBigAction::FragNeeded
    }

    /// Writes an ICMP "fragmentation needed" (next-hop MTU = `path_mtu` minus our
    /// overhead) to the inner source of `outer` (as built by `encapsulate` for
    /// `peer`), into `out`; returns its length.
    /// The source is the *peer* VM's overlay address (the tunnel's far end):
    /// the kernel would drop a packet arriving on the TUN from one of its own
    /// addresses as a martian. For an inner IPv6 packet (with the IPv6
    /// overlay), an ICMPv6 Packet Too Big instead, from this VM's IPv6
    /// address (see `datapath/v6.rs`).
    pub fn frag_needed(
        &self,
        outer: &[u8],
        peer: Ipv4Addr,
        path_mtu: u32,
        out: &mut [u8],
    ) -> Result<usize, DropReason> {
        let inner = outer.get(self.header_len()..).ok_or(DropReason::TooShort)?;
        if let Some(o6) = self.overlay6_for(inner) {
            return self.packet_too_big(o6, inner, peer, path_mtu, out);
        }
        let mtu = path_mtu
            .saturating_sub(self.overhead() as u32)
            .clamp(68, 65535) as u16;
        let from = self
            .layout
            .vm_overlay_addr(peer)
            .ok_or(DropReason::PeerNotUnicast)?;
        crate::wire::icmp::emit_dest_unreachable(
            out,
            from,
            inner,
            crate::wire::icmp::CODE_FRAG_NEEDED,
            mtu,
        )
        .map_err(DropReason::from)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;
