//! The `provdb` binary: parses the command line and runs a subcommand.

use std::process::ExitCode;

use clap::Parser;
use provdb_server::cli::{Cli, Command};
use provdb_server::{ServerError, embedded, logging, run_server, shutdown_signal};

/// mimalloc instead of the system allocator: planning and executing a
/// query allocate many small, short-lived objects, and glibc's malloc/free
/// took about a quarter of the server's time on point queries (perf, see
/// benches/point_profile.py). Build with `--features system-alloc` to use
/// the system allocator instead, for heap profilers that hook malloc
/// (heaptrack, valgrind).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the process waits, after the server has stopped, for
/// background threads still running before it exits anyway.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provdb: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Everything acknowledged is durable once `run` returns (the database
    // is closed); a blocking task that never finishes (a client's request
    // stuck in a parser, a hung disk) must not keep the process alive.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("provdb: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<bool, ServerError> {
    match command {
        Command::Serve(args) => {
            run_server(args.to_config()?, shutdown_signal()).await?;
            Ok(true)
        }
        Command::Sql(args) => {
            let options = args.storage.database_options()?;
            embedded::run_sql(
                options,
                &args.command,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )
            .await
        }
        Command::Export(args) => provdb_server::prov_cli::export(args).await,
        Command::Import(args) => provdb_server::prov_cli::import(args).await,
    }
}
