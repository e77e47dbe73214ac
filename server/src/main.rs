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
    match runtime.block_on(run(cli.command)) {
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
