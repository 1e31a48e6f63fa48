//! The `segmentd` binary: everything lives in the library; see `segmentd --help`.

fn main() -> std::process::ExitCode {
    segmentd::cli::main()
}
