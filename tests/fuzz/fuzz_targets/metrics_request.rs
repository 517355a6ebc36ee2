//! Fuzzes the `/metrics` request parser: it must not panic, must look at no
//! more than MAX_REQUEST bytes, and must be monotone (a definite answer for a
//! prefix is the answer for the whole input, which the streaming reader relies
//! on). The first byte picks `eof` and where to cut the prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::metrics::{parse_request, Parse, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let eof = ctl & 1 == 1;
    let whole = parse_request(data, eof);
    assert_eq!(whole, parse_request(&data[..data.len().min(MAX_REQUEST)], eof));
    if data.len() >= MAX_REQUEST {
        assert_ne!(whole, Parse::Incomplete);
    }
    let cut = data.len() * usize::from(ctl >> 1) / 127;
    let part = parse_request(&data[..cut], false);
    if part != Parse::Incomplete {
        assert_eq!(part, parse_request(data, false));
    }
    if let Parse::Request { method, target } = whole {
        assert!(!method.is_empty() && method.len() <= 32);
        assert!(method.bytes().all(|b| b.is_ascii_graphic()));
        assert!(!target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic()));
    }
});
