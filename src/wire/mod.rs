//! Wire formats: zero-copy views over byte buffers for IPv4, IPv6, GRE,
//! ICMPv4 and ICMPv6 Packet Too Big.
//!
//! Each view validates its buffer once (`new_checked`); accessors after that
//! cannot panic. `*Repr` types carry the fields meshfwd emits.

pub mod checksum;
pub mod gre;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;

pub use gre::{GreError, GrePacket, GreRepr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};

/// Why a buffer could not be read or written as the format requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header or the length it announces.
    Truncated,
    /// IP version is not the one of the view (4 or 6).
    Version,
    /// Header fields contradict each other (IHL < 5, total length < header).
    Malformed,
    /// The result would exceed 65535 bytes.
    TooLong,
}
