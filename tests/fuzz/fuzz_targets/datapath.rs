//! Fuzzes the ingress and egress decisions with arbitrary packets, in both
//! encapsulations, with every GRE option and with or without the IPv6 overlay:
//! no panic, and an accepted packet's range lies inside the buffer and passes
//! the checks again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::datapath::{flow_hash, Datapath, Encap, HEADROOM};
use meshfwd::layout::Layout;
use meshfwd::layout6::Layout6;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let opts = data.first().copied().unwrap_or(0);
    let layout = if opts & 1 == 1 {
        Layout::classic()
    } else {
        Layout::wide()
    };
    let key = (opts & 2 != 0).then_some(42);
    let encap = if opts & 4 != 0 { Encap::Udp } else { Encap::Gre };
    let (csum, seq) = (opts & 8 != 0, opts & 16 != 0);
    let mut dp = Datapath::new(layout, Ipv4Addr::new(192, 168, 16, 33), key)
        .with_options(encap, csum, seq);
    let layout6 = Layout6::default();
    if opts & 32 != 0 {
        dp = dp.with_overlay6(layout6);
    }
    let sender = Ipv4Addr::new(192, 168, data.get(1).copied().unwrap_or(16), 32);
    let body = data.get(2..).unwrap_or(&[]);
    let _ = flow_hash(body);

    let mut rx = body.to_vec();
    let got = match encap {
        Encap::Gre => dp.decapsulate(&mut rx, body.len()),
        Encap::Udp => dp.decapsulate_udp(&mut rx, body.len(), sender, opts),
    };
    if let Ok(d) = got {
        assert!(d.start + d.len <= body.len());
        let delivered = &rx[d.start..d.start + d.len];
        if let Ok(inner) = meshfwd::wire::Ipv4Packet::new_checked(delivered) {
            assert!(layout.block(dp.local()).unwrap().contains(inner.dst_addr()));
        } else {
            assert!(dp.overlay6().is_some(), "IPv6 delivered without the overlay");
            let inner = meshfwd::wire::Ipv6Packet::new_checked(delivered)
                .expect("delivered packet is valid IPv4 or IPv6");
            assert!(layout6.block(dp.local()).contains(inner.dst_addr()));
            assert_eq!(layout6.decompose(inner.src_addr()).unwrap().vm, d.peer);
        }
    }

    let mut tx = vec![0u8; HEADROOM + body.len()];
    tx[HEADROOM..].copy_from_slice(body);
    if let Ok(e) = dp.encapsulate(&mut tx, HEADROOM, body.len()) {
        assert!(e.start + e.len <= tx.len());
        let gre_at = match encap {
            Encap::Gre => {
                let outer = meshfwd::wire::Ipv4Packet::new_checked(&tx[e.start..e.start + e.len])
                    .expect("outer header is valid");
                assert!(outer.verify_checksum());
                assert_eq!(outer.dst_addr(), e.peer);
                e.start + 20
            }
            Encap::Udp => e.start,
        };
        let g = meshfwd::wire::gre::GrePacket::new_checked(&tx[gre_at..e.start + e.len])
            .expect("GRE header is valid");
        assert!(g.verify_checksum());
        assert_eq!(g.has_checksum(), csum);
        assert_eq!(g.has_seq(), seq);
    }
});
