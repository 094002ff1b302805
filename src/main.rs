//! The `jobq` binary: the HTTP server and the command line.

mod cli;
mod server;

fn main() -> std::process::ExitCode {
    cli::main()
}
