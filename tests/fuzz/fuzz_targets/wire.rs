//! Fuzzes the IPv4 and GRE views: validation then every accessor must not panic,
//! and a GRE header re-emitted from its parsed form must parse back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::wire::{GrePacket, GreRepr, Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (p.payload().len(), p.verify_checksum(), p.frag_offset(), p.ecn());
        let r = Ipv4Repr::parse(&p);
        let mut out = vec![0u8; 20 + r.payload_len];
        if r.emit(&mut out).is_ok() {
            let q = Ipv4Packet::new_checked(&out[..]).expect("emitted header parses");
            assert!(q.verify_checksum());
        }
    }
    if let Ok(g) = GrePacket::new_checked(data) {
        let _ = (g.key(), g.seq(), g.checksum(), g.payload().len(), g.verify_checksum());
        let r = GreRepr::parse(&g);
        let mut out = vec![0u8; r.header_len() + g.payload().len()];
        out[r.header_len()..].copy_from_slice(g.payload());
        r.emit(&mut out).expect("buffer sized for the header");
        let back = GrePacket::new_checked(&out[..]).expect("emitted header parses");
        assert_eq!(GreRepr::parse(&back), r);
        assert!(back.verify_checksum());
    }
});
