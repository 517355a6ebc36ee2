//! Fuzzes the ingress and egress decisions with arbitrary packets: no panic, and
//! an accepted packet's range lies inside the buffer and passes the checks again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::datapath::{Datapath, HEADROOM};
use meshfwd::layout::Layout;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let layout = if data.first().is_some_and(|b| b & 1 == 1) {
        Layout::classic()
    } else {
        Layout::wide()
    };
    let key = data.get(1).and_then(|b| (b & 1 == 1).then_some(42));
    let dp = Datapath::new(layout, Ipv4Addr::new(192, 168, 16, 33), key);
    let body = data.get(2..).unwrap_or(&[]);

    let mut rx = body.to_vec();
    if let Ok(d) = dp.decapsulate(&mut rx, body.len()) {
        assert!(d.start + d.len <= body.len());
        let inner = meshfwd::wire::Ipv4Packet::new_checked(&rx[d.start..d.start + d.len])
            .expect("delivered packet is valid IPv4");
        assert!(layout.block(dp.local()).unwrap().contains(inner.dst_addr()));
    }

    let mut tx = vec![0u8; HEADROOM + body.len()];
    tx[HEADROOM..].copy_from_slice(body);
    if let Ok(e) = dp.encapsulate(&mut tx, HEADROOM, body.len()) {
        assert!(e.start + e.len <= tx.len());
        let outer = meshfwd::wire::Ipv4Packet::new_checked(&tx[e.start..e.start + e.len])
            .expect("outer header is valid");
        assert!(outer.verify_checksum());
        assert_eq!(outer.dst_addr(), e.peer);
    }
});
