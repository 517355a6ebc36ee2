//! Stateless address layouts: overlay address ⇄ (VM underlay address, host part).
//!
//! An overlay address is the concatenation `overlay prefix | VM bits | host part`,
//! where the VM bits are the host bits of the VM's underlay address. Routing a
//! packet therefore needs no table: the peer VM is a shift and a mask away.
//!
//! ```text
//!  wide (default)   240.0.0.0/4 ⇄ 192.168.0.0/16
//!   31   28 27                          12 11            0
//!  +-------+------------------------------+---------------+
//!  | 1111  |  VM bits (192.168.X.Y → X.Y) |   host part   |
//!  +-------+------------------------------+---------------+
//!     4                 16                       12
//! ```
//!
//! Host parts: 0 = reserved (the block's network address), 1 = the VM itself,
//! n ≥ 2 = container #(n − 1).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix, always stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: u32,
    prefix: u8,
}

impl Cidr {
    /// Builds a prefix; fails when `prefix > 32` or `addr` has bits set below the prefix.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, LayoutError> {
        if prefix > 32 {
            return Err(LayoutError(format!(
                "prefix length /{prefix} is larger than 32"
            )));
        }
        let mask = mask(prefix);
        let raw = u32::from(addr);
        if raw & !mask != 0 {
            return Err(LayoutError(format!(
                "{addr}/{prefix} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(raw & mask)
            )));
        }
        Ok(Cidr { net: raw, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == self.net
    }

    /// The last address of the prefix (its broadcast address for a subnet).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net | !self.mask())
    }

    /// True when the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        self.net & m == other.net & m
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| LayoutError(format!("'{s}' is not a CIDR (expected A.B.C.D/N)")))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| LayoutError(format!("'{a}' in '{s}' is not an IPv4 address")))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| LayoutError(format!("'/{p}' in '{s}' is not a prefix length 0-32")))?;
        Cidr::new(addr, prefix)
    }
}

#[inline]
const fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// A configuration error, with a message meant for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutError {}

/// What a host part means inside a VM's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Host part 0: the block's network address, never assigned.
    Reserved,
    /// Host part 1: the VM's own overlay address (on its TUN).
    Vm,
    /// Host part n ≥ 2: container number n − 1.
    Container(u32),
}

impl Role {
    pub fn of_host(host: u32) -> Role {
        match host {
            0 => Role::Reserved,
            1 => Role::Vm,
            n => Role::Container(n - 1),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Role::Reserved => "reserved",
            Role::Vm => "vm",
            Role::Container(_) => "container",
        }
    }
}

/// An overlay address taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decomposed {
    /// Underlay address of the VM that owns the address.
    pub vm: Ipv4Addr,
    /// Host part inside the VM's block.
    pub host: u32,
}

/// The mapping between an overlay prefix and an underlay prefix.
///
/// Invariant (checked by [`Layout::new`]): overlay and underlay do not overlap
/// and `host_bits = underlay.prefix − overlay.prefix ≥ 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    overlay: Cidr,
    underlay: Cidr,
    host_bits: u8,
}

/// The named presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Wide,
    Classic,
}

impl Layout {
    /// Smallest host part width: 2 bits leave room for reserved, VM and two containers.
    pub const MIN_HOST_BITS: u8 = 2;

    pub fn new(overlay: Cidr, underlay: Cidr) -> Result<Layout, LayoutError> {
        let vm_bits = 32 - underlay.prefix as i32;
        let free = 32 - overlay.prefix as i32;
        let host_bits = free - vm_bits;
        if host_bits < Self::MIN_HOST_BITS as i32 {
            return Err(LayoutError(format!(
                "overlay {overlay} leaves {free} bits below its prefix, underlay {underlay} needs {vm_bits} of them for VM addresses, \
                 so {host_bits} host bits remain; at least {} are needed (use a shorter overlay prefix or a longer underlay prefix)",
                Self::MIN_HOST_BITS
            )));
        }
        if overlay.overlaps(&underlay) {
            return Err(LayoutError(format!(
                "overlay {overlay} and underlay {underlay} overlap; they must be disjoint"
            )));
        }
        Ok(Layout {
            overlay,
            underlay,
            host_bits: host_bits as u8,
        })
    }

    pub fn preset(p: Preset) -> Layout {
        let (o, u) = match p {
            Preset::Wide => (Ipv4Addr::new(240, 0, 0, 0), 4),
            Preset::Classic => (Ipv4Addr::new(10, 0, 0, 0), 8),
        };
        let overlay = Cidr {
            net: o.into(),
            prefix: u,
        };
        let underlay = Cidr {
            net: Ipv4Addr::new(192, 168, 0, 0).into(),
            prefix: 16,
        };
        Layout::new(overlay, underlay).expect("presets are valid")
    }

    pub fn wide() -> Layout {
        Self::preset(Preset::Wide)
    }

    pub fn classic() -> Layout {
        Self::preset(Preset::Classic)
    }

    pub fn overlay(&self) -> Cidr {
        self.overlay
    }

    pub fn underlay(&self) -> Cidr {
        self.underlay
    }

    pub fn host_bits(&self) -> u8 {
        self.host_bits
    }

    pub fn vm_bits(&self) -> u8 {
        32 - self.underlay.prefix
    }

    /// Number of overlay addresses in each VM's block (2^host_bits).
    pub fn block_size(&self) -> u64 {
        1u64 << self.host_bits
    }

    /// Largest valid container number (host part all ones).
    pub fn max_container(&self) -> u32 {
        (self.block_size() - 2) as u32
    }

    #[inline]
    fn host_mask(&self) -> u32 {
        ((1u64 << self.host_bits) - 1) as u32
    }

    #[inline]
    pub fn in_overlay(&self, a: Ipv4Addr) -> bool {
        self.overlay.contains(a)
    }

    #[inline]
    pub fn in_underlay(&self, a: Ipv4Addr) -> bool {
        self.underlay.contains(a)
    }

    /// Underlay address of the VM owning overlay address `a` (raw u32 fast path).
    /// The caller must have checked `in_overlay`.
    #[inline]
    pub fn vm_of_raw(&self, a: u32) -> u32 {
        let vm_mask = !self.underlay.mask();
        self.underlay.net | ((a >> self.host_bits) & vm_mask)
    }

    /// Overlay → (VM, host part); `None` outside the overlay prefix.
    #[inline]
    pub fn decompose(&self, a: Ipv4Addr) -> Option<Decomposed> {
        if !self.in_overlay(a) {
            return None;
        }
        let raw = u32::from(a);
        Some(Decomposed {
            vm: Ipv4Addr::from(self.vm_of_raw(raw)),
            host: raw & self.host_mask(),
        })
    }

    /// (VM, host part) → overlay; `None` when the VM is outside the underlay or the
    /// host part does not fit.
    pub fn compose(&self, vm: Ipv4Addr, host: u32) -> Option<Ipv4Addr> {
        if !self.in_underlay(vm) || u64::from(host) >= self.block_size() {
            return None;
        }
        let vm_bits = u32::from(vm) & !self.underlay.mask();
        Some(Ipv4Addr::from(
            self.overlay.net | (vm_bits << self.host_bits) | host,
        ))
    }

    /// Overlay address of container `n` (1-based) on `vm`.
    pub fn container_addr(&self, vm: Ipv4Addr, n: u32) -> Option<Ipv4Addr> {
        if n == 0 || n > self.max_container() {
            return None;
        }
        self.compose(vm, n + 1)
    }

    /// The VM's block of overlay addresses.
    pub fn block(&self, vm: Ipv4Addr) -> Option<Cidr> {
        let net = self.compose(vm, 0)?;
        Some(Cidr {
            net: net.into(),
            prefix: 32 - self.host_bits,
        })
    }

    /// The VM's own overlay address (host part 1).
    pub fn vm_overlay_addr(&self, vm: Ipv4Addr) -> Option<Ipv4Addr> {
        self.compose(vm, 1)
    }

    /// True when `vm` is a usable host address of the underlay (not its network or
    /// broadcast address). Sending to those fails (EACCES) or reaches everyone.
    #[inline]
    pub fn is_unicast_vm(&self, vm: Ipv4Addr) -> bool {
        self.in_underlay(vm) && vm != self.underlay.addr() && vm != self.underlay.last()
    }

    /// Validates a configured local underlay address.
    pub fn check_local(&self, local: Ipv4Addr) -> Result<(), LayoutError> {
        if !self.in_underlay(local) {
            return Err(LayoutError(format!(
                "local address {local} is outside the underlay {}",
                self.underlay
            )));
        }
        if !self.is_unicast_vm(local) {
            return Err(LayoutError(format!(
                "local address {local} is the network or broadcast address of the underlay {}",
                self.underlay
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overlay {} <-> underlay {} ({} host bits, {} addresses per VM)",
            self.overlay,
            self.underlay,
            self.host_bits,
            self.block_size()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn classic_example_from_the_spec() {
        let l = Layout::classic();
        let d = l.decompose(ip("10.16.32.91")).unwrap();
        assert_eq!(d.vm, ip("192.168.16.32"));
        assert_eq!(d.host, 91);
        assert_eq!(Role::of_host(d.host), Role::Container(90));
        assert_eq!(l.block(d.vm).unwrap().to_string(), "10.16.32.0/24");
        assert_eq!(l.vm_overlay_addr(d.vm), Some(ip("10.16.32.1")));
        assert_eq!(l.container_addr(d.vm, 90), Some(ip("10.16.32.91")));
        assert_eq!(l.host_bits(), 8);
    }

    #[test]
    fn wide_example_from_the_spec() {
        let l = Layout::wide();
        assert_eq!(l.host_bits(), 12);
        assert_eq!(l.block_size(), 4096);
        let vm = ip("192.168.16.32");
        assert_eq!(l.block(vm).unwrap().to_string(), "241.2.0.0/20");
        assert_eq!(l.compose(vm, 4093), Some(ip("241.2.15.253")));
        let d = l.decompose(ip("241.2.15.253")).unwrap();
        assert_eq!((d.vm, d.host), (vm, 4093));
        assert_eq!(l.max_container(), 4094);
    }

    #[test]
    fn custom_13_bits_needs_a_17_underlay() {
        let l = Layout::new(
            "240.0.0.0/4".parse().unwrap(),
            "192.168.0.0/17".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(l.host_bits(), 13);
        assert_eq!(l.block_size(), 8192);
        // A /16 underlay cannot be served with 13 host bits: 4 + 16 + 13 > 32.
        assert_eq!(
            Layout::new(
                "240.0.0.0/4".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            )
            .unwrap()
            .host_bits(),
            12
        );
        // 192.168.128.0 is outside 192.168.0.0/17.
        assert_eq!(l.compose(ip("192.168.128.1"), 2), None);
    }

    #[test]
    fn bad_layouts_are_explained() {
        let e = Layout::new(
            "10.0.0.0/8".parse().unwrap(),
            "192.0.0.0/8".parse().unwrap(),
        );
        assert!(e.is_err());
        let e = Layout::new(
            "10.0.0.0/16".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        )
        .unwrap_err();
        assert!(e.0.contains("host bits remain"), "{e}");
        let e = Layout::new(
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        )
        .unwrap_err();
        assert!(e.0.contains("overlap"), "{e}");
        assert!("10.1.0.0/8"
            .parse::<Cidr>()
            .unwrap_err()
            .0
            .contains("10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn underlay_network_and_broadcast_are_not_vms() {
        let l = Layout::wide();
        assert!(!l.is_unicast_vm(ip("192.168.0.0")));
        assert!(!l.is_unicast_vm(ip("192.168.255.255")));
        assert!(l.is_unicast_vm(ip("192.168.0.1")));
        assert!(l.check_local(ip("10.0.0.1")).is_err());
        assert!(l.check_local(ip("192.168.255.255")).is_err());
    }

    /// Any valid layout: overlay prefix 0..=30, underlay prefix so that host bits ≥ 2,
    /// with random disjoint networks.
    fn arb_layout() -> impl Strategy<Value = Layout> {
        (1u8..=30, any::<u32>(), any::<u32>())
            .prop_flat_map(|(op, onet, unet)| (Just(op), op + 2..=32, Just(onet), Just(unet)))
            .prop_filter_map("overlapping prefixes", |(op, up, onet, unet)| {
                let o = Cidr::new(Ipv4Addr::from(onet & mask(op)), op).ok()?;
                let u = Cidr::new(Ipv4Addr::from(unet & mask(up)), up).ok()?;
                Layout::new(o, u).ok()
            })
    }

    fn presets() -> impl Strategy<Value = Layout> {
        prop_oneof![Just(Layout::wide()), Just(Layout::classic())]
    }

    fn roundtrip(l: Layout, low: u32) -> Result<(), TestCaseError> {
        let a = Ipv4Addr::from(
            l.overlay().mask() & u32::from(l.overlay().addr()) | (low & !l.overlay().mask()),
        );
        let d = l.decompose(a).expect("inside overlay");
        prop_assert!(l.in_underlay(d.vm));
        prop_assert!(u64::from(d.host) < l.block_size());
        prop_assert_eq!(l.compose(d.vm, d.host), Some(a));
        prop_assert!(l.block(d.vm).unwrap().contains(a));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn compose_decompose_is_identity_presets(l in presets(), low in any::<u32>()) {
            roundtrip(l, low)?;
        }

        #[test]
        fn compose_decompose_is_identity_custom(l in arb_layout(), low in any::<u32>()) {
            roundtrip(l, low)?;
        }

        #[test]
        fn decompose_compose_is_identity(l in arb_layout(), vm_low in any::<u32>(), host in any::<u32>()) {
            let vm = Ipv4Addr::from(u32::from(l.underlay().addr()) | (vm_low & !l.underlay().mask()));
            let host = host & ((l.block_size() - 1) as u32);
            let a = l.compose(vm, host).unwrap();
            prop_assert_eq!(l.decompose(a), Some(Decomposed { vm, host }));
        }

        #[test]
        fn outside_the_overlay_is_rejected(l in prop_oneof![arb_layout(), presets()], a in any::<u32>()) {
            let a = Ipv4Addr::from(a);
            prop_assert_eq!(l.decompose(a).is_some(), l.overlay().contains(a));
        }

        #[test]
        fn outside_the_underlay_does_not_compose(l in arb_layout(), a in any::<u32>(), host in 0u32..4) {
            let a = Ipv4Addr::from(a);
            prop_assume!(!l.underlay().contains(a));
            prop_assert_eq!(l.compose(a, host), None);
        }
    }
}
