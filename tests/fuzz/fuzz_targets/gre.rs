//! Fuzzes the GRE view alone: validation and accessors must not panic, and a
//! header re-emitted from its parsed form parses back equal with a valid checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::wire::{GrePacket, GreRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GrePacket::new_checked(data) else {
        return;
    };
    let _ = (g.key(), g.seq(), g.checksum(), g.payload().len(), g.verify_checksum());
    let r = GreRepr::parse(&g);
    let mut out = vec![0u8; r.header_len() + g.payload().len()];
    out[r.header_len()..].copy_from_slice(g.payload());
    r.emit(&mut out).expect("buffer sized for the header");
    let back = GrePacket::new_checked(&out[..]).expect("emitted header parses");
    assert_eq!(GreRepr::parse(&back), r);
    assert!(back.verify_checksum());
});
