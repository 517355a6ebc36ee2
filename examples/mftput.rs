//! mftput — a minimal TCP throughput probe for the qemu guest of
//! `tests/netns/kernel.sh kdbench` (the guest has no iperf3). Built
//! statically next to meshfwd and appended to the guest's initramfs.
//!
//!   mftput server ADDR:PORT            # serves connections one after another
//!   mftput client ADDR:PORT SECONDS    # one stream for SECONDS
//!
//! The client writes a 128 KiB buffer for SECONDS, closes its sending side
//! and waits for the server's answer: the bytes it received and the time from
//! its first byte to end of stream. The client prints one line
//! `sent=B received=B seconds=S mbit=M` (the server's numbers) and exits 0
//! only when both byte counts agree.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BUF: usize = 128 * 1024;

fn serve(addr: &str) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let mut buf = vec![0u8; BUF];
    loop {
        let (mut s, _) = match l.accept() {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        let ok = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("read: {e}");
                    break false;
                }
            }
        };
        let nanos = first.map_or(0, |t| t.elapsed().as_nanos());
        if ok {
            let _ = writeln!(s, "{total} {nanos}");
        }
    }
}

fn client(addr: &str, secs: f64) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let buf = vec![0x5au8; BUF];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < until {
        s.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        sent += BUF as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("reading the server's answer: {e}"))?;
    let mut it = answer.split_whitespace().map(str::parse::<u128>);
    let (Some(Ok(received)), Some(Ok(nanos))) = (it.next(), it.next()) else {
        return Err(format!("bad answer from the server: {answer:?}"));
    };
    let seconds = nanos as f64 / 1e9;
    let mbit = if nanos > 0 {
        received as f64 * 8.0 / seconds / 1e6
    } else {
        0.0
    };
    println!("sent={sent} received={received} seconds={seconds:.3} mbit={mbit:.1}");
    if received != u128::from(sent) {
        return Err(format!("the server received {received} of {sent} bytes"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    let r = match a.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [_, "server", addr] => serve(addr),
        [_, "client", addr, secs] => match secs.parse::<f64>() {
            Ok(s) if s > 0.0 && s < 3600.0 => client(addr, s),
            _ => Err(format!("bad SECONDS {secs:?}")),
        },
        _ => Err("usage: mftput server ADDR:PORT | mftput client ADDR:PORT SECONDS".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mftput: {e}");
            ExitCode::FAILURE
        }
    }
}
