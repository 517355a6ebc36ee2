//! The IPv6 overlay layout: IPv6 address ⇄ (VM underlay IPv4 address, index).
//!
//! The mesh prefix is one RFC 4193 unique local /64. Each VM owns the /96 that
//! follows it with the VM's whole 32-bit underlay address, and numbers the
//! last 32 bits exactly like the IPv4 host part, so a dual-stack container has
//! the same number in both families and any node finds the VM of a destination
//! with a shift, as in IPv4:
//!
//! ```text
//!  0                                 64                  96                 128
//! +---------------------------------+-------------------+-------------------+
//! |  mesh prefix (operator ULA /64) | VM underlay IPv4  |  index (32 bits)  |
//! +---------------------------------+-------------------+-------------------+
//! ```
//!
//! Indices: 0 = reserved, 1 = the VM itself, n + 1 = container #n. Indices
//! inside the IPv4 block (below 2^host_bits) are dual-stack; the ones above
//! are IPv6-only containers, up to container #(2^32 − 2).

use crate::layout::{Layout, LayoutError};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The default mesh prefix: `fd` + the global ID `6d:65:73:68:66` ("meshf" in
/// ASCII) + subnet 0. RFC 4193 asks for a random global ID so that merged
/// networks do not collide; a grid that may ever be routed together with
/// another meshfwd grid should pick its own (`--overlay6`).
pub const DEFAULT_OVERLAY6: &str = "fd6d:6573:6866::/64";

/// The only prefix length of the mesh prefix: 64 bits of prefix, 32 of VM, 32 of index.
pub const PREFIX_LEN: u8 = 64;
/// Each VM's block: the mesh prefix and the VM's underlay address.
pub const BLOCK_PREFIX_LEN: u8 = 96;
/// Largest index (all ones): container #(2^32 − 2).
pub const MAX_INDEX: u32 = u32::MAX;
/// Largest container number in IPv6.
pub const MAX_CONTAINER: u32 = MAX_INDEX - 1;

/// An IPv6 prefix, stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr6 {
    net: u128,
    prefix: u8,
}

impl Cidr6 {
    /// Builds a prefix; fails when `prefix > 128` or `addr` has bits set below it.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self, LayoutError> {
        if prefix > 128 {
            return Err(LayoutError(format!(
                "prefix length /{prefix} is larger than 128"
            )));
        }
        let raw = u128::from(addr);
        let mask = mask6(prefix);
        if raw & !mask != 0 {
            return Err(LayoutError(format!(
                "{addr}/{prefix} has host bits set; did you mean {}/{prefix}?",
                Ipv6Addr::from(raw & mask)
            )));
        }
        Ok(Cidr6 { net: raw, prefix })
    }

    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> u128 {
        mask6(self.prefix)
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & self.mask() == self.net
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

impl FromStr for Cidr6 {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or_else(|| {
            LayoutError(format!(
                "'{s}' is not an IPv6 prefix (expected ADDRESS/LEN, e.g. {DEFAULT_OVERLAY6})"
            ))
        })?;
        let addr: Ipv6Addr = a
            .parse()
            .map_err(|_| LayoutError(format!("'{a}' in '{s}' is not an IPv6 address")))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| LayoutError(format!("'/{p}' in '{s}' is not a prefix length 0-128")))?;
        Cidr6::new(addr, prefix)
    }
}

#[inline]
const fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

/// An IPv6 overlay address taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decomposed6 {
    /// Bits 64..95: the underlay address of the VM that owns the address
    /// (not necessarily inside the underlay: see [`Layout6::check_vm`]).
    pub vm: Ipv4Addr,
    /// Bits 96..127: the index inside the VM's /96.
    pub index: u32,
}

/// The IPv6 mesh prefix (a ULA /64) and the arithmetic around it.
///
/// Invariant (checked by [`Layout6::new`]): a /64 inside `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout6 {
    /// The upper 64 bits of every mesh address.
    prefix: u64,
}

impl Default for Layout6 {
    fn default() -> Self {
        DEFAULT_OVERLAY6
            .parse()
            .expect("the default prefix is valid")
    }
}

impl Layout6 {
    /// Validates a mesh prefix: a /64, inside the RFC 4193 locally assigned
    /// range `fd00::/8`.
    pub fn new(prefix: Cidr6) -> Result<Layout6, LayoutError> {
        if prefix.prefix() != PREFIX_LEN {
            return Err(LayoutError(format!(
                "IPv6 mesh prefix {prefix} must be a /64: bits 64-95 hold the VM's underlay IPv4 address and bits 96-127 the index \
                 (e.g. {DEFAULT_OVERLAY6})"
            )));
        }
        let first = (prefix.net >> 120) as u8;
        if first != 0xfd {
            // fc00::/8 (L = 0) is reserved by RFC 4193 for a future central registry.
            return Err(LayoutError(format!(
                "IPv6 mesh prefix {prefix} is not an RFC 4193 unique local prefix: it must lie inside fd00::/8 \
                 (fd + a random 40-bit global ID + a 16-bit subnet, e.g. {DEFAULT_OVERLAY6})"
            )));
        }
        Ok(Layout6 {
            prefix: (prefix.net >> 64) as u64,
        })
    }

    /// The mesh prefix as a CIDR.
    pub fn prefix(&self) -> Cidr6 {
        Cidr6 {
            net: u128::from(self.prefix) << 64,
            prefix: PREFIX_LEN,
        }
    }

    /// True when `a` is inside the mesh /64.
    #[inline]
    pub fn contains_raw(&self, a: u128) -> bool {
        (a >> 64) as u64 == self.prefix
    }

    #[inline]
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        self.contains_raw(u128::from(a))
    }

    /// Bits 64..95 of `a` as a raw IPv4 address: the VM, for an address inside
    /// the mesh prefix (the caller checks that).
    #[inline]
    pub const fn vm_of_raw(a: u128) -> u32 {
        (a >> 32) as u32
    }

    /// Bits 96..127 of `a`: the index.
    #[inline]
    pub const fn index_of_raw(a: u128) -> u32 {
        a as u32
    }

    /// Mesh address → (VM, index); `None` outside the mesh prefix.
    #[inline]
    pub fn decompose(&self, a: Ipv6Addr) -> Option<Decomposed6> {
        let raw = u128::from(a);
        self.contains_raw(raw).then(|| Decomposed6 {
            vm: Ipv4Addr::from(Self::vm_of_raw(raw)),
            index: Self::index_of_raw(raw),
        })
    }

    /// (VM, index) → mesh address. Every pair has one; whether the VM belongs
    /// to the mesh is [`Layout6::check_vm`]'s question.
    #[inline]
    pub fn compose(&self, vm: Ipv4Addr, index: u32) -> Ipv6Addr {
        Ipv6Addr::from(
            u128::from(self.prefix) << 64 | u128::from(u32::from(vm)) << 32 | u128::from(index),
        )
    }

    /// The VM's /96.
    pub fn block(&self, vm: Ipv4Addr) -> Cidr6 {
        Cidr6 {
            net: self.compose(vm, 0).into(),
            prefix: BLOCK_PREFIX_LEN,
        }
    }

    /// The VM's own IPv6 overlay address (index 1).
    pub fn vm_addr(&self, vm: Ipv4Addr) -> Ipv6Addr {
        self.compose(vm, 1)
    }

    /// IPv6 address of container `n` (1-based) on `vm`; `None` for 0 or past
    /// [`MAX_CONTAINER`].
    pub fn container_addr(&self, vm: Ipv4Addr, n: u32) -> Option<Ipv6Addr> {
        (1..=MAX_CONTAINER)
            .contains(&n)
            .then(|| self.compose(vm, n + 1))
    }

    /// Checks that `vm` (bits 64..95 of a mesh address) is a VM of the mesh: a
    /// unicast address of the IPv4 layout's underlay.
    pub fn check_vm(&self, layout: &Layout, vm: Ipv4Addr) -> Result<(), LayoutError> {
        if !layout.in_underlay(vm) {
            return Err(LayoutError(format!(
                "bits 64-95 name {vm}, which is outside the underlay {}: no VM of this mesh owns it",
                layout.underlay()
            )));
        }
        if !layout.is_unicast_vm(vm) {
            return Err(LayoutError(format!(
                "bits 64-95 name {vm}, the network or broadcast address of the underlay {}, not a usable VM",
                layout.underlay()
            )));
        }
        Ok(())
    }

    /// The IPv6 twin of an IPv4 overlay address: same VM, index = host part.
    pub fn from_ipv4(&self, layout: &Layout, a: Ipv4Addr) -> Option<Ipv6Addr> {
        let d = layout.decompose(a)?;
        Some(self.compose(d.vm, d.host))
    }

    /// The IPv4 twin of a mesh address, when its VM is in the underlay and its
    /// index inside the IPv4 block; `None` for an IPv6-only index.
    pub fn to_ipv4(&self, layout: &Layout, a: Ipv6Addr) -> Option<Ipv4Addr> {
        let d = self.decompose(a)?;
        layout.compose(d.vm, d.index)
    }

    /// True when index `index` has no IPv4 twin under `layout` (an IPv6-only container).
    pub fn is_ipv6_only(layout: &Layout, index: u32) -> bool {
        u64::from(index) >= layout.block_size()
    }
}

impl FromStr for Layout6 {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layout6::new(s.parse()?)
    }
}

impl fmt::Display for Layout6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const VM: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 32);

    #[test]
    fn default_prefix_and_examples() {
        let l6 = Layout6::default();
        assert_eq!(l6.to_string(), "fd6d:6573:6866::/64");
        assert_eq!(l6.block(VM).to_string(), "fd6d:6573:6866:0:c0a8:1020::/96");
        assert_eq!(l6.vm_addr(VM), ip6("fd6d:6573:6866:0:c0a8:1020:0:1"));
        assert_eq!(
            l6.container_addr(VM, 90),
            Some(ip6("fd6d:6573:6866:0:c0a8:1020:0:5b"))
        );
        let d = l6
            .decompose(ip6("fd6d:6573:6866:0:c0a8:1020:0:5b"))
            .unwrap();
        assert_eq!((d.vm, d.index), (VM, 91));
        assert!(l6
            .block(VM)
            .contains(ip6("fd6d:6573:6866:0:c0a8:1020:ffff:ffff")));
        assert!(!l6.block(VM).contains(ip6("fd6d:6573:6866:0:c0a8:1021::1")));
    }

    #[test]
    fn index_1_and_the_top_index() {
        let l6 = Layout6::default();
        assert_eq!(l6.compose(VM, 1), l6.vm_addr(VM));
        assert_eq!(l6.container_addr(VM, 0), None);
        assert_eq!(
            l6.container_addr(VM, MAX_CONTAINER),
            Some(ip6("fd6d:6573:6866:0:c0a8:1020:ffff:ffff"))
        );
        assert_eq!(l6.container_addr(VM, MAX_CONTAINER + 1), None);
        let top = l6
            .decompose(ip6("fd6d:6573:6866:0:c0a8:1020:ffff:ffff"))
            .unwrap();
        assert_eq!(top.index, MAX_INDEX);
        assert_eq!(
            crate::layout::Role::of_host(top.index),
            crate::layout::Role::Container(4_294_967_294)
        );
    }

    #[test]
    fn dual_stack_twins_share_the_number() {
        let l = Layout::wide();
        let l6 = Layout6::default();
        let v4 = ip("241.2.15.253"); // container #4092 on VM 192.168.16.32
        let v6 = l6.from_ipv4(&l, v4).unwrap();
        assert_eq!(v6, ip6("fd6d:6573:6866:0:c0a8:1020:0:ffd"));
        assert_eq!(l6.to_ipv4(&l, v6), Some(v4));
        // Container #4094 is the last dual-stack one; #4095 is IPv6-only.
        assert!(!Layout6::is_ipv6_only(&l, 4095));
        assert!(Layout6::is_ipv6_only(&l, 4096));
        assert_eq!(l6.to_ipv4(&l, l6.container_addr(VM, 4095).unwrap()), None);
        assert_eq!(l6.from_ipv4(&l, ip("10.0.0.1")), None);
    }

    #[test]
    fn bad_prefixes_are_explained() {
        let e = "fd6d:6573:6866::/48".parse::<Layout6>().unwrap_err();
        assert!(e.0.contains("must be a /64"), "{e}");
        let e = "2001:db8::/64".parse::<Layout6>().unwrap_err();
        assert!(e.0.contains("fd00::/8"), "{e}");
        let e = "fc00::/64".parse::<Layout6>().unwrap_err();
        assert!(e.0.contains("RFC 4193"), "{e}");
        let e = "fd6d:6573:6866:0:1::/64".parse::<Layout6>().unwrap_err();
        assert!(e.0.contains("did you mean fd6d:6573:6866::/64"), "{e}");
        assert!("fd6d::".parse::<Layout6>().is_err());
        assert!("fd6d::/129".parse::<Layout6>().is_err());
        assert!("10.0.0.0/64".parse::<Layout6>().is_err());
        assert!("fd12:3456:789a:1::/64".parse::<Layout6>().is_ok());
    }

    #[test]
    fn vms_outside_the_underlay_are_not_mesh_vms() {
        let l = Layout::wide();
        let l6 = Layout6::default();
        assert!(l6.check_vm(&l, VM).is_ok());
        assert!(l6
            .check_vm(&l, ip("10.1.2.3"))
            .unwrap_err()
            .0
            .contains("outside the underlay"));
        assert!(l6
            .check_vm(&l, ip("192.168.255.255"))
            .unwrap_err()
            .0
            .contains("broadcast"));
    }

    fn arb_layout6() -> impl Strategy<Value = Layout6> {
        any::<u64>().prop_map(|p| {
            let net = (u128::from(p) << 64) & !(0xffu128 << 120) | 0xfdu128 << 120;
            Layout6::new(Cidr6::new(Ipv6Addr::from(net), 64).unwrap()).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn compose_decompose_is_identity(l6 in arb_layout6(), low in any::<u64>()) {
            let a = Ipv6Addr::from(u128::from(l6.prefix().addr()) | u128::from(low));
            let d = l6.decompose(a).expect("inside the prefix");
            prop_assert_eq!(l6.compose(d.vm, d.index), a);
            prop_assert!(l6.block(d.vm).contains(a));
        }

        #[test]
        fn decompose_compose_is_identity(l6 in arb_layout6(), vm in any::<u32>(), index in any::<u32>()) {
            let vm = Ipv4Addr::from(vm);
            let a = l6.compose(vm, index);
            prop_assert_eq!(l6.decompose(a), Some(Decomposed6 { vm, index }));
        }

        #[test]
        fn outside_the_prefix_is_rejected(l6 in arb_layout6(), a in any::<u128>()) {
            let a = Ipv6Addr::from(a);
            prop_assert_eq!(l6.decompose(a).is_some(), l6.prefix().contains(a));
        }

        /// For every IPv4 overlay address: its IPv6 twin has the same VM, index
        /// = host part, and maps back.
        #[test]
        fn ipv4_host_part_is_the_index(l6 in arb_layout6(), classic in any::<bool>(), low in any::<u32>()) {
            let l = if classic { Layout::classic() } else { Layout::wide() };
            let a = Ipv4Addr::from(u32::from(l.overlay().addr()) | (low & !l.overlay().mask()));
            let d4 = l.decompose(a).unwrap();
            let v6 = l6.from_ipv4(&l, a).unwrap();
            let d6 = l6.decompose(v6).unwrap();
            prop_assert_eq!(d6.vm, d4.vm);
            prop_assert_eq!(d6.index, d4.host);
            prop_assert!(!Layout6::is_ipv6_only(&l, d6.index));
            prop_assert_eq!(l6.to_ipv4(&l, v6), Some(a));
        }
    }
}
