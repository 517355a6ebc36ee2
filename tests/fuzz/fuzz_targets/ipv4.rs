//! Fuzzes the IPv4 view alone: validation, every accessor, re-emission,
//! fragmentation and ICMP error construction must not panic, and what they
//! produce must parse with valid checksums.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::wire::{icmp, ipv4, Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload().len(), p.verify_checksum(), p.frag_offset(), p.ecn(), p.dscp());
    let r = Ipv4Repr::parse(&p);
    let mut out = vec![0u8; 20 + r.payload_len];
    if r.emit(&mut out).is_ok() {
        assert!(Ipv4Packet::new_checked(&out[..]).unwrap().verify_checksum());
    }
    let mut frag = [0u8; 1500];
    for i in 0..64 {
        match ipv4::fragment(data, 576, i, &mut frag) {
            Ok(Some(n)) => {
                let f = Ipv4Packet::new_checked(&frag[..n]).expect("fragment parses");
                assert!(f.verify_checksum() && n <= 576);
            }
            _ => break,
        }
    }
    let mut icmp_out = [0u8; 128];
    if let Ok(n) = icmp::emit_dest_unreachable(&mut icmp_out, std::net::Ipv4Addr::LOCALHOST, data, 4, 1400) {
        assert!(Ipv4Packet::new_checked(&icmp_out[..n]).unwrap().verify_checksum());
    }
});
