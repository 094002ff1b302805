//! The `jobq` binary: the HTTP server and the command line.

mod cli;
mod server;

/// mimalloc returns freed pages to the system; glibc's malloc kept most of a
/// server's freed memory (1.1 GB after its jobs and tags were purged).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
