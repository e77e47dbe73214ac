//! `provdb export` and `provdb import`: PROV documents out of and into a
//! database, through a running server's HTTP API (the default) or, with
//! `--offline`, by opening the data directory in-process.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use provdb_engine::prov::{ImportOptions, ImportReport};
use provdb_sql::Database;

use crate::cli::StorageArgs;
use crate::error::ServerError;
use crate::prov_api::ExportRequest;

/// Where the database is.
#[derive(Debug, Args)]
pub struct Target {
    /// URL of a running provdb's HTTP API.
    #[arg(
        long,
        env = "PROVDB_URL",
        default_value = "http://127.0.0.1:22000",
        value_name = "URL"
    )]
    pub url: String,

    /// Open --data-dir in-process instead of talking to a server. No server
    /// may be running on that directory.
    #[arg(long)]
    pub offline: bool,

    #[command(flatten)]
    pub storage: StorageArgs,
}

/// `provdb export`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["execution", "dataflow", "node", "all"])))]
pub struct ExportArgs {
    /// Export one execution: the execution, its tasks, the rows they used
    /// and generated, its plan, scientist and hardware.
    #[arg(long, value_name = "TAG")]
    pub execution: Option<String>,

    /// Export every execution of a dataflow.
    #[arg(long, value_name = "TAG")]
    pub dataflow: Option<String>,

    /// Export the lineage closure of a node (repeat for several starts),
    /// e.g. --node alexnet.otrainedmodel:1.
    #[arg(long, value_name = "ID")]
    pub node: Vec<String>,

    /// Export the whole PROV graph.
    #[arg(long)]
    pub all: bool,

    /// With --node: upstream (what it came from, the default), downstream
    /// (what came from it) or both.
    #[arg(long, value_name = "DIRECTION")]
    pub direction: Option<String>,

    /// With --node: follow at most this many relations.
    #[arg(long, value_name = "N")]
    pub depth: Option<u32>,

    /// provn, json, dot or svg (svg runs Graphviz `dot`). Default: from the
    /// --output file's extension, else provn.
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format: Option<String>,

    /// Write the document to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub target: Target,
}

/// `provdb import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// PROV-JSON documents to import; a directory means every .json file in
    /// it (a yProv4ML run directory). Metric side files are found beside
    /// each document.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Accept relations to nodes neither declared in the document nor
    /// stored in provdb.
    #[arg(long)]
    pub allow_dangling: bool,

    #[command(flatten)]
    pub target: Target,
}

fn format_from_output(args: &ExportArgs) -> Option<String> {
    args.format.clone().or_else(|| {
        let ext = args
            .output
            .as_ref()?
            .extension()?
            .to_str()?
            .to_ascii_lowercase();
        matches!(ext.as_str(), "provn" | "json" | "dot" | "svg").then_some(ext)
    })
}

/// Run `provdb export`.
pub async fn export(args: ExportArgs) -> Result<bool, ServerError> {
    let request = ExportRequest {
        execution: args.execution.clone(),
        dataflow: args.dataflow.clone(),
        nodes: args.node.clone(),
        all: args.all,
        direction: args.direction.clone(),
        depth: args.depth,
        format: format_from_output(&args),
    };
    let (scope, format) = request.resolve().map_err(ServerError::Command)?;
    let bytes = if args.target.offline {
        let db = Database::open(args.target.storage.database_options()?).await?;
        let out = db.prov_export(&scope, format).await;
        db.close().await?;
        out.map_err(|e| ServerError::Command(e.to_string()))?
    } else {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("execution", request.execution.clone()),
            ("dataflow", request.dataflow.clone()),
            ("direction", request.direction.clone()),
            ("depth", request.depth.map(|d| d.to_string())),
            ("format", request.format.clone()),
            ("all", request.all.then(|| "true".to_string())),
        ] {
            if let Some(v) = v {
                query.append_pair(k, &v);
            }
        }
        for n in &request.nodes {
            query.append_pair("node", n);
        }
        let url = format!(
            "{}/prov/export?{}",
            args.target.url.trim_end_matches('/'),
            query.finish()
        );
        http(reqwest::Client::new().get(&url), &args.target.url).await?
    };
    match &args.output {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| ServerError::io(format!("writing {}", path.display()), e))?,
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| ServerError::io("writing to standard output", e))?,
    }
    Ok(true)
}

/// Send a request; a non-2xx reply is an error carrying the server's message.
async fn http(req: reqwest::RequestBuilder, base: &str) -> Result<Vec<u8>, ServerError> {
    let reply = req.send().await.map_err(|e| {
        ServerError::Command(format!(
            "cannot reach provdb at {base} ({e}); is `provdb serve` running? (--url names another server, --offline opens the data directory directly)"
        ))
    })?;
    let status = reply.status();
    let body = reply
        .bytes()
        .await
        .map_err(|e| ServerError::Command(format!("reading the reply from {base}: {e}")))?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(ServerError::Command(format!("{msg} (HTTP {status})")));
    }
    Ok(body.to_vec())
}

/// The documents named on the command line (directories expanded).
fn documents(files: &[PathBuf]) -> Result<Vec<PathBuf>, ServerError> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| ServerError::io(format!("reading directory {}", f.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ServerError::Command(format!(
                    "{} holds no .json document",
                    f.display()
                )));
            }
            out.extend(found);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

fn summary(path: &Path, r: &ImportReport) -> String {
    let mut s = format!(
        "imported {}: {} entities, {} activities, {} agents, {} relations",
        path.display(),
        r.entities,
        r.activities,
        r.agents,
        r.relations
    );
    if r.bundles > 0 {
        s.push_str(&format!(", {} bundles", r.bundles));
    }
    if let Some(run) = &r.run {
        s.push_str(&format!(
            "; yProv4ML run {run} (layout {}): {} params, {} metric series ({} new points), {} artifacts",
            r.layout.as_deref().unwrap_or("?"),
            r.params,
            r.series,
            r.metric_points,
            r.artifacts
        ));
    }
    s
}

/// Run `provdb import`.
pub async fn import(args: ImportArgs) -> Result<bool, ServerError> {
    let docs = documents(&args.files)?;
    let db = if args.target.offline {
        Some(Database::open(args.target.storage.database_options()?).await?)
    } else {
        None
    };
    let mut ok = true;
    for path in &docs {
        let abs = std::fs::canonicalize(path)
            .map_err(|e| ServerError::io(format!("opening {}", path.display()), e))?;
        let opts = ImportOptions {
            name: abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            base_dir: abs.parent().map(Path::to_path_buf),
            allow_dangling: args.allow_dangling,
        };
        let result = match &db {
            Some(db) => {
                let file = std::fs::File::open(&abs)
                    .map_err(|e| ServerError::io(format!("opening {}", abs.display()), e))?;
                db.prov_import(file, &opts)
                    .await
                    .map_err(|e| ServerError::Command(e.to_string()))
            }
            None => import_http(&args.target.url, &abs, &opts).await,
        };
        match result {
            Ok(report) => println!("{}", summary(path, &report)),
            Err(e) => {
                eprintln!("provdb: {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if let Some(db) = db {
        db.close().await?;
    }
    Ok(ok)
}

async fn import_http(
    url: &str,
    path: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ServerError> {
    // Streamed from the file: the server parses it as it arrives.
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ServerError::io(format!("reading {}", path.display()), e))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("name", &opts.name);
    if let Some(b) = &opts.base_dir {
        query.append_pair("base", &b.to_string_lossy());
    }
    if opts.allow_dangling {
        query.append_pair("allow_dangling", "true");
    }
    let endpoint = format!(
        "{}/prov/import?{}",
        url.trim_end_matches('/'),
        query.finish()
    );
    let reply = http(
        reqwest::Client::new()
            .post(&endpoint)
            .header("content-type", "application/json")
            .body(body),
        url,
    )
    .await?;
    serde_json::from_slice(&reply)
        .map_err(|e| ServerError::Command(format!("unexpected reply from {url}: {e}")))
}
