//! Fuzzes the IPv6 view alone: validation, every accessor, the extension-header
//! walk, re-emission and Packet Too Big construction must not panic; what they
//! produce must parse, and a Packet Too Big fits 1280 bytes with a valid checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::wire::{icmpv6, ipv6, Ipv6Packet, Ipv6Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload().len(), p.flow_label(), p.ecn(), p.dscp(), p.hop_limit());
    if let Some((_, at)) = ipv6::upper_layer(&p) {
        assert!(at <= p.payload().len());
    }
    let r = Ipv6Repr::parse(&p);
    let mut out = vec![0u8; 40 + r.payload_len];
    r.emit(&mut out).expect("a parsed header re-emits");
    assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&out[..]).unwrap()), r);
    let mut ptb = [0u8; 1280];
    let n = icmpv6::emit_packet_too_big(&mut ptb, std::net::Ipv6Addr::LOCALHOST, data, 1280)
        .expect("1280 bytes always suffice");
    let e = Ipv6Packet::new_checked(&ptb[..n]).expect("the error parses");
    assert!(ipv6::verify_upper_layer(e.src_addr(), e.dst_addr(), ipv6::NEXT_ICMPV6, e.payload()));
});
