//! `meshfwd-cni`: the CNI plugin binary; everything lives in [`meshfwd::cni`].

fn main() -> std::process::ExitCode {
    meshfwd::cni::main()
}
