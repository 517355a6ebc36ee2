//! The IPv6 overlay's datapath decisions (issue #17): inner IPv6 packets in
//! GRE with protocol type 0x86DD, in both encapsulations. Pure, like the rest
//! of the datapath; enabled per node by [`Datapath::with_overlay6`], which
//! nothing in the worker calls yet.
//!
//! Egress (TUN → underlay), the IPv4 steps with the IPv6 layout: the
//! destination must be inside the mesh /64, outside this VM's /96, not index
//! 0; the peer VM (bits 64..95) must be a unicast address of the underlay; the
//! source must be inside this VM's /96. The outer TOS is the inner Traffic
//! Class. The inner hop limit is left alone, as the IPv4 TTL is: the kernels
//! at both ends decrement it when they forward.
//!
//! Ingress (anti-spoofing): after the shared outer and GRE checks, the inner
//! source must not be link-local, multicast, unspecified or IPv4-mapped, must
//! be inside the mesh /64 with VM bits equal to the outer source; the
//! destination must be inside this VM's /96 and not index 0; neighbour
//! discovery (ICMPv6 133-137, which would configure the TUN from afar) and
//! nested tunnels (IPv4, IPv6 or GRE as the upper layer) are refused. RFC 6040
//! ECN as for IPv4, on the Traffic Class.

use super::{Datapath, Decapsulated, DropReason, TooBigAction};
use crate::layout6::Layout6;
use crate::wire::icmpv6;
use crate::wire::ipv4::{ECN_CE, ECN_NOT_ECT};
use crate::wire::ipv6::{self, Ipv6Packet};
use std::net::Ipv4Addr;

/// ICMPv6 neighbour discovery: router solicitation/advertisement, neighbour
/// solicitation/advertisement, redirect (RFC 4861).
const ND_TYPES: std::ops::RangeInclusive<u8> = 133..=137;

/// A node's IPv6 overlay, precomputed for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overlay6 {
    layout: Layout6,
    /// This VM's /96 (index bits zero).
    block: u128,
}

/// The egress verdict for an IPv6 packet: where it goes, its length and the
/// Traffic Class to copy outward.
pub(super) struct Routed6 {
    pub peer: Ipv4Addr,
    pub len: usize,
    pub traffic_class: u8,
}

/// True for sources no mesh packet may carry: unspecified, link-local
/// (fe80::/10), multicast (ff00::/8) and IPv4-mapped (::ffff:0:0/96).
#[inline]
pub fn is_special_source(src: u128) -> bool {
    src == 0
        || src >> 118 == 0x3fa // fe80::/10
        || src >> 120 == 0xff
        || src >> 32 == 0xffff
}

/// RFC 6040 decapsulation of ECN (the same table as the IPv4 path): outer CE
/// marks an ECN-capable inner packet CE and drops a Not-ECT one; every other
/// outer codepoint leaves the inner one as it is. `None` = drop.
#[inline]
pub fn ecn_after_decap(outer: u8, inner: u8) -> Option<u8> {
    match (outer & ipv6::ECN_MASK, inner & ipv6::ECN_MASK) {
        (ECN_CE, ECN_NOT_ECT) => None,
        (ECN_CE, _) => Some(ECN_CE),
        (_, inner) => Some(inner),
    }
}

impl Datapath {
    /// Enables the IPv6 overlay: inner IPv6 packets are carried in GRE with
    /// protocol 0x86DD, each way. Without it, IPv6 is refused as before
    /// (`not_ipv4` on egress, `gre_not_ipv4` on ingress).
    pub fn with_overlay6(mut self, layout: Layout6) -> Datapath {
        self.overlay6 = Some(Overlay6 {
            layout,
            block: u128::from(layout.block(self.local).addr()),
        });
        self
    }

    /// The IPv6 mesh prefix, when the IPv6 overlay is enabled.
    pub fn overlay6(&self) -> Option<Layout6> {
        self.overlay6.map(|o| o.layout)
    }

    /// The egress decision for an IPv6 packet.
    #[inline]
    pub(super) fn route6(&self, o6: &Overlay6, inner: &[u8]) -> Result<Routed6, DropReason> {
        let ip = Ipv6Packet::new_checked(inner)?;
        let dst = ip.dst_raw();
        if !o6.layout.contains_raw(dst) {
            return Err(DropReason::DstNotInOverlay);
        }
        if dst >> 32 == o6.block >> 32 {
            return Err(DropReason::DstLocalVm);
        }
        if Layout6::index_of_raw(dst) == 0 {
            return Err(DropReason::DstReserved);
        }
        let peer = Layout6::vm_of_raw(dst);
        if peer & self.underlay_mask != self.underlay_net {
            return Err(DropReason::PeerNotUnderlay);
        }
        let vm_bits = peer & !self.underlay_mask;
        if vm_bits == 0 || vm_bits == !self.underlay_mask {
            return Err(DropReason::PeerNotUnicast);
        }
        if ip.src_raw() >> 32 != o6.block >> 32 {
            return Err(DropReason::SrcNotLocal);
        }
        Ok(Routed6 {
            peer: Ipv4Addr::from(peer),
            len: ip.total_len(),
            traffic_class: ip.traffic_class(),
        })
    }

    /// The ingress checks of an inner IPv6 packet at `buf[inner_start..end]`
    /// whose GRE header passed, sent by underlay address `sender` (already
    /// checked to be in the underlay) with outer ECN bits `outer_ecn`.
    #[inline]
    pub(super) fn decapsulate6(
        &self,
        o6: &Overlay6,
        buf: &mut [u8],
        inner_start: usize,
        end: usize,
        sender: u32,
        outer_ecn: u8,
    ) -> Result<Decapsulated, DropReason> {
        let inner_buf = buf
            .get_mut(inner_start..end)
            .ok_or(DropReason::InnerMalformed)?;
        let mut inner =
            Ipv6Packet::new_checked(inner_buf).map_err(|_| DropReason::InnerMalformed)?;
        let src = inner.src_raw();
        if is_special_source(src) {
            return Err(DropReason::InnerSrcSpecial);
        }
        if !o6.layout.contains_raw(src) {
            return Err(DropReason::InnerSrcNotOverlay);
        }
        if Layout6::vm_of_raw(src) != sender {
            return Err(DropReason::SpoofedSource);
        }
        let dst = inner.dst_raw();
        if dst >> 32 != o6.block >> 32 {
            return Err(DropReason::InnerDstNotLocal);
        }
        if Layout6::index_of_raw(dst) == 0 {
            return Err(DropReason::DstReserved);
        }
        match ipv6::upper_layer(&inner) {
            // Too many extension headers or a truncated chain: the kernel
            // might read what we cannot.
            None => return Err(DropReason::InnerMalformed),
            Some((ipv6::NEXT_ICMPV6, at)) => {
                if inner
                    .payload()
                    .get(at)
                    .is_some_and(|t| ND_TYPES.contains(t))
                {
                    return Err(DropReason::InnerNd);
                }
            }
            Some((ipv6::NEXT_IPV4 | ipv6::NEXT_IPV6 | ipv6::NEXT_GRE, _)) => {
                return Err(DropReason::InnerTunnel);
            }
            Some(_) => {}
        }
        let len = inner.total_len();
        let ecn = ecn_after_decap(outer_ecn, inner.ecn()).ok_or(DropReason::EcnCeNotEct)?;
        if ecn != inner.ecn() {
            inner.set_ecn(ecn);
        }
        Ok(Decapsulated {
            start: inner_start,
            len,
            peer: Ipv4Addr::from(sender),
        })
    }

    /// [`Datapath::too_big_action`] for an inner IPv6 packet: IPv6 is never
    /// fragmented on the way, so the source is always told (Packet Too Big),
    /// except about an ICMPv6 error (RFC 4443 2.4 (e)) or a packet whose
    /// upper layer cannot be found.
    pub(super) fn too_big_action6(&self, inner: &[u8]) -> TooBigAction {
        let Ok(ip) = Ipv6Packet::new_checked(inner) else {
            return TooBigAction::DropSilently;
        };
        match ipv6::upper_layer(&ip) {
            None => TooBigAction::DropSilently,
            Some((ipv6::NEXT_ICMPV6, at)) => match ip.payload().get(at) {
                Some(t) if !icmpv6::is_error_type(*t) => TooBigAction::FragNeeded,
                _ => TooBigAction::DropSilently,
            },
            Some(_) => TooBigAction::FragNeeded,
        }
    }

    /// ICMPv6 Packet Too Big about `inner` (IPv6, as encapsulated towards
    /// `peer`), with MTU `path_mtu` minus our overhead and never below 1280.
    /// The source is this VM's IPv6 overlay address (index 1, on the TUN):
    /// the node that could not forward the packet, as RFC 4443 has it.
    /// (IPv4's "fragmentation needed" comes from the peer VM's address
    /// because the kernel drops an IPv4 packet from one of its own addresses
    /// as a martian; IPv6 input has no such check, measured in
    /// tests/netns/run.sh `dual`.)
    pub(super) fn packet_too_big(
        &self,
        o6: &Overlay6,
        inner: &[u8],
        peer: Ipv4Addr,
        path_mtu: u32,
        out: &mut [u8],
    ) -> Result<usize, DropReason> {
        if !self.layout.is_unicast_vm(peer) {
            return Err(DropReason::PeerNotUnicast);
        }
        let mtu = path_mtu
            .saturating_sub(self.overhead() as u32)
            .max(ipv6::MIN_MTU as u32);
        icmpv6::emit_packet_too_big(out, o6.layout.vm_addr(self.local), inner, mtu)
            .map_err(DropReason::from)
    }
}

/// [`super::flow_hash`] for an IPv6 packet: addresses, flow label, next header
/// and, for TCP/UDP/SCTP directly after the fixed header, the ports. 0 for
/// anything that is not IPv6.
#[inline]
pub fn flow_hash6(inner: &[u8]) -> u32 {
    let Ok(ip) = Ipv6Packet::new_checked(inner) else {
        return 0;
    };
    let fold = |a: u128| (a as u32) ^ ((a >> 32) as u32) ^ ((a >> 64) as u32) ^ ((a >> 96) as u32);
    let proto = ip.next_header();
    let mut h = fold(ip.src_raw()) ^ fold(ip.dst_raw()).rotate_left(16) ^ u32::from(proto) << 8;
    h ^= ip.flow_label().rotate_left(11);
    if matches!(proto, 6 | 17 | 132) {
        if let Some(p) = ip.payload().get(..4) {
            h ^= u32::from_be_bytes([p[0], p[1], p[2], p[3]]).rotate_left(7);
        }
    }
    super::finalise_hash(h)
}
