//! The `meshfwd` binary: parses the command line and hands over to the
//! forwarder runtime or to a subcommand.

use clap::Parser;
use meshfwd::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Addr(a)) => addr(&a),
        Some(Command::Check(a)) => meshfwd::check::run(&a),
        Some(Command::Attach(a)) => meshfwd::attach::attach(&a),
        Some(Command::Detach(a)) => meshfwd::attach::detach(&a),
        None => meshfwd::runtime::main(cli.run),
    }
}

fn addr(a: &meshfwd::cli::AddrArgs) -> ExitCode {
    let layout = match a.layout.resolve() {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let layout6 = match a.layout6.resolve() {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let result = match (&a.address, &a.vm) {
        (Some(addr), _) => meshfwd::addr::explain(&layout, &layout6, addr),
        (None, Some(vm)) => {
            meshfwd::addr::compose(&layout, &layout6, vm, a.container, a.host, a.ipv6_only)
        }
        (None, None) => Err("give an address, or --vm with --container/--host".into()),
    };
    match result {
        Ok(e) if a.json => {
            println!("{}", e.to_json(&layout));
            ExitCode::SUCCESS
        }
        Ok(e) => {
            println!("{}", e.report());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("meshfwd addr: error: {msg}");
    ExitCode::from(2)
}
