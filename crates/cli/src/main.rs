//! `eye`: one binary for every part of The Eye and its operator commands.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eye_admin::{Admin, QueueProbe};
use eye_cli::dev;
use eye_cli::metrics::WorkerListener;
use eye_cli::stack::{self, Queue};
use eye_core::Settings;
use eye_core::origin::WebOrigin;
use eye_core::rate_limit::{Rate, RateLimit};
use eye_core::token::{Scope, TokenKeys};
use eye_entity::dead::Selection;
use eye_entity::{rate_limits, tokens};
use eye_migration::{Migrator, MigratorTrait};
use eye_worker::Worker;
use eye_worker::metrics::WorkerMetrics;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every request parses and maps many small values; glibc's allocator spent a quarter of the
/// api's time on them (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "eye",
    version,
    about = "The Eye: collect behaviour events from your applications"
)]
struct Cli {
    /// Settings file; `EYE_*` environment variables override it.
    #[arg(long, global = true, default_value = "eye.toml", env = "EYE_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on a SQLite file and an in-process queue. Needs nothing else.
    Dev {
        /// Where the database, signing key and dev token live.
        #[arg(long, default_value = "eye-data")]
        data_dir: PathBuf,
    },
    /// The ingestion api (`EYE_API_ADDR`).
    Api,
    /// The admin panel and the JSON read api (`EYE_ADMIN_ADDR`).
    Admin,
    /// A queue consumer that validates and stores events.
    Worker {
        /// Consumers in this process, each with its own channel and transactions.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// Brings the database schema up to date.
    Migrate {
        /// Undo the latest migration instead.
        #[arg(long)]
        rollback: bool,
    },
    /// Api tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Applications.
    #[command(subcommand)]
    App(AppCommand),
    /// People who log in to the admin panel.
    #[command(subcommand)]
    User(UserCommand),
    /// Messages no worker could read: list, replay or discard them.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Event types from JSON Schema files (`schema_dir`): check, try, reload.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Old events: remove them, or see the monthly partitions that hold them.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The per-minute counts the stats api answers from.
    #[command(subcommand)]
    Rollups(RollupsCommand),
    /// Report jobs, through the admin's read api: start one, wait for it, save its CSV.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Prints events (and rejected events, marked) as they are stored, one a line, until
    /// Ctrl-C. Reads the admin's stream with a read token.
    Tail {
        #[command(flatten)]
        admin: AdminArgs,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        types: TypeFilter,
        #[arg(long)]
        session_id: Option<Uuid>,
        /// Each minute's counts per event type and top pages, as a worker publishes them
        /// (about 10 s after the minute), instead of the events.
        #[arg(long, conflicts_with_all = ["category", "name", "session_id"])]
        trends: bool,
    },
    /// Sends events from a file of JSON Lines (or one JSON array) to an api: batched,
    /// compressed, retried, each stored once. Prints a line for every event not stored and
    /// the totals; exits with 1 unless every event was accepted.
    Send {
        /// The file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// An `events:write` token.
        #[arg(long, env = "EYE_TOKEN", hide_env_values = true)]
        token: String,
        /// The api. Default: `http://` and `api_addr` of the settings.
        #[arg(long, env = "EYE_URL")]
        url: Option<String>,
        /// Stop at the first line that is not an event (what was sent before it is delivered).
        #[arg(long)]
        strict: bool,
        /// Requests in flight at once (of up to 500 events each).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Send bodies uncompressed. By default those above 32 KiB are gzipped unless the api
        /// is on this machine (a loopback address), where compressing only costs CPU.
        #[arg(long, conflicts_with = "gzip")]
        no_gzip: bool,
        /// Gzip bodies above 32 KiB even to an api on this machine.
        #[arg(long)]
        gzip: bool,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Removes events and rejected events older than `--older-than`, and sessions that ended
    /// before. On PostgreSQL whole months go, once all of a month is older (rows stay up to a
    /// month longer); on SQLite rows are deleted a chunk at a time. Prints what went.
    Apply {
        /// How old is too old, e.g. `400d`.
        #[arg(long)]
        older_than: humantime::Duration,
    },
    /// Lists the monthly partitions of `events` and `rejected_events` (PostgreSQL).
    Status,
}

/// Which application and event type to follow or report on; every filter optional.
#[derive(clap::Args)]
struct TypeFilter {
    /// Only this application (by name).
    #[arg(long)]
    application: Option<String>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    name: Option<String>,
}

/// Where the admin is and the token that asks it.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin's base URL; default: the local admin (`admin_addr`).
    #[arg(long)]
    url: Option<String>,
    /// A token with `events:read` (its own application only unless `events:read:all`).
    #[arg(long, env = "EYE_TOKEN", hide_env_values = true)]
    token: String,
}

impl AdminArgs {
    fn url(&self, settings: &Settings) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| local_url(&settings.admin_addr))
    }
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Starts a report job and prints it (its `id` and `status`); with `--wait`, waits for it
    /// and writes its CSV to `--output` or standard output. Exits with 1 if it failed.
    Create {
        /// `events_by_type`, `sessions` or `rejections`.
        #[arg(long, value_parser = ["events_by_type", "sessions", "rejections"])]
        kind: String,
        /// `last_hour`, `last_day` or `last_week`; or give `--from`/`--to`. Neither: the last day.
        #[arg(long, value_parser = ["last_hour", "last_day", "last_week"], conflicts_with_all = ["from", "to"])]
        window: Option<String>,
        /// Start, UTC `YYYY-MM-DDTHH:MM`, a date, or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// End; default: now.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        types: TypeFilter,
        /// Wait until the report is complete, then write its CSV.
        #[arg(long)]
        wait: bool,
        /// Where the CSV goes (with `--wait`); default: standard output.
        #[arg(short, long, requires = "wait")]
        output: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Prints a report's state as JSON.
    Status {
        id: Uuid,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Writes a complete report's CSV to `--output` or standard output.
    Download {
        id: Uuid,
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum RollupsCommand {
    /// Recomputes the counts of a window from the stored events: after upgrading to a version
    /// with rollups, for the events stored before. Workers go on storing meanwhile; each day
    /// is replaced in one transaction. Without `--from`/`--to`, everything stored.
    Rebuild {
        /// Start, RFC 3339 or a date (midnight UTC), e.g. `2026-11-01`.
        #[arg(long, value_parser = eye_cli::rollups::parse_time)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End (exclusive, widened to the minute), RFC 3339 or a date.
        #[arg(long, value_parser = eye_cli::rollups::parse_time)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand)]
enum DeadCommand {
    /// Lists dead letters, most recently dead first: id, last time, count, size, reason.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Publishes dead letters to the queue again (RabbitMQ) and removes each once confirmed;
    /// events' ids make a replay harmless to repeat. Prints the ids replayed.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Replay {
        ids: Vec<Uuid>,
        /// Every dead letter there is when the replay starts.
        #[arg(long)]
        all: bool,
    },
    /// Deletes dead letters for good.
    Discard {
        #[arg(required = true)]
        ids: Vec<Uuid>,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Checks every `*.json` file of DIR before a deploy: prints the event types it declares
    /// and each entry it skipped (other files, subdirectories, hidden files, names that are
    /// not UTF-8), or each file at fault and why (exit 1).
    Check { dir: PathBuf },
    /// Prints which lines of FILE (JSON Lines, each a `POST /v1/events` body of one event)
    /// the api or a worker with the types of DIR would refuse, and why. Exit 0: none would be;
    /// 1: some would be; 2: DIR or FILE cannot be used.
    Test { dir: PathBuf, file: PathBuf },
    /// Asks every running worker to reload `schema_dir`; each does within `token_refresh_ms`
    /// (SIGHUP reloads one process at once). A worker that finds a broken file logs it and
    /// keeps its types. Where `schema_dir` is set here, it is checked first and a broken
    /// directory is not sent for reload (exit 1).
    Reload,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates an admin user; asks for the password twice unless `--password-stdin`.
    Create {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token (and the application, if new) and prints the JWT alone on stdout.
    Create {
        #[arg(long)]
        app: String,
        /// Comma-separated: events:write, events:read, events:read:all. Default: events:write,
        /// or only the read scopes with --all-applications.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// Let the token read every application's events, not only its own
        /// (events:read and events:read:all).
        #[arg(long)]
        all_applications: bool,
        /// A publishable key, safe to embed in a web page: it only sends events, only from
        /// pages of its --origin, with a limit per visitor address (`publishable_rate_limit`).
        #[arg(long, conflicts_with_all = ["scopes", "all_applications"])]
        publishable: bool,
        /// A web origin the publishable key is used from: scheme://host[:port], e.g.
        /// https://shop.example. Repeat it (or separate with commas) for several.
        #[arg(
            long = "origin",
            value_name = "ORIGIN",
            value_delimiter = ',',
            requires = "publishable"
        )]
        origins: Vec<WebOrigin>,
        /// How long the token lives, e.g. 90d, 12h, 1y. Default: 90d, or 1y for a
        /// publishable key (replacing it means changing the pages that embed it).
        #[arg(long)]
        expires_in: Option<humantime::Duration>,
    },
    /// Lists every token with its application, scopes, expiry and state.
    List,
    /// Revokes a token; every api refuses it within `token_refresh_ms`.
    Revoke { id: Uuid },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Lists every application with its state and rate limit.
    List,
    /// Refuses every token of the application.
    Disable { name: String },
    /// Accepts the application's tokens again.
    Enable { name: String },
    /// Gives the application a rate limit of its own, or returns it to the default
    /// (`rate_limit`, `rate_limit_burst`). Every api applies it within `token_refresh_ms`.
    #[command(group(clap::ArgGroup::new("limit").required(true).args(["rate", "default"])))]
    Limit {
        name: String,
        /// Events per second, minute or hour: `2000/s`, `600/min`, `50000/h`. Each api
        /// instance allows this much: behind a load balancer, divide the total by the instances.
        #[arg(long, requires = "burst")]
        rate: Option<Rate>,
        /// The most events at once after a quiet spell; a batch above it is refused with
        /// `batch_over_burst`.
        #[arg(long, requires = "rate")]
        burst: Option<u64>,
        /// Use the default limit of the settings again.
        #[arg(long, conflicts_with_all = ["rate", "burst"])]
        default: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.config)?;
    // Services refuse a setting out of range before they connect or listen (`dev::run`
    // checks its own).
    if matches!(
        cli.command,
        Command::Api | Command::Admin | Command::Worker { .. } | Command::Migrate { .. }
    ) {
        settings.validate()?;
    }
    if let Command::Dev { data_dir } = &cli.command {
        return dev::run(settings, data_dir).await;
    }
    // A client command: its output is the summary, not service logs.
    if let Command::Send {
        file,
        token,
        url,
        strict,
        concurrency,
        no_gzip,
        gzip,
    } = cli.command
    {
        let client = |url: &str| {
            let client = eye_client::Client::builder(url, &token).concurrency(concurrency);
            if gzip || (!no_gzip && !is_loopback(url)) {
                client
            } else {
                client.gzip_above(None)
            }
        };
        return send(&settings, file, url, strict, client).await;
    }
    // A client command too: it prints the report, not service logs.
    if let Command::Report(command) = cli.command {
        return report(&settings, command).await;
    }
    // Checking files prints results, not service logs.
    if let Command::Schemas(command) = cli.command {
        return schemas(&settings, command).await;
    }
    eye_core::telemetry::init(settings.log_format);
    match cli.command {
        Command::Dev { .. } | Command::Send { .. } | Command::Schemas(_) | Command::Report(_) => {
            Ok(())
        }
        Command::Api => api(&settings).await,
        Command::Admin => admin(&settings).await,
        Command::Worker { concurrency } => worker(&settings, concurrency).await,
        Command::Migrate { rollback } => migrate(&settings, rollback).await,
        Command::Token(command) => token(&settings, command).await,
        Command::App(command) => app(&settings, command).await,
        Command::User(command) => user(&settings, command).await,
        Command::Dead(command) => dead(&settings, command).await,
        Command::Retention(command) => retention(&settings, command).await,
        Command::Rollups(RollupsCommand::Rebuild { from, to }) => {
            let db = stack::connect(settings.database_url()?).await?;
            eye_cli::rollups::rebuild(&db, from, to).await
        }
        Command::Tail {
            admin,
            json,
            types:
                TypeFilter {
                    application,
                    category,
                    name,
                },
            session_id,
            trends,
        } => {
            let tail = eye_cli::tail::Tail {
                url: admin.url(&settings),
                token: admin.token,
                json,
                application,
                category,
                name,
                session_id: session_id.map(|s| s.to_string()),
                trends,
            };
            tail.run(stack::shutdown_signal()).await
        }
    }
}

async fn report(settings: &Settings, command: ReportCommand) -> anyhow::Result<()> {
    use eye_cli::report::{NewReport, ReportClient};
    let client = |admin: AdminArgs| ReportClient {
        url: admin.url(settings),
        token: admin.token,
    };
    let print = |value: &serde_json::Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    };
    match command {
        ReportCommand::Create {
            kind,
            window,
            from,
            to,
            types:
                TypeFilter {
                    application,
                    category,
                    name,
                },
            wait,
            output,
            admin,
        } => {
            let client = client(admin);
            let asked = NewReport {
                kind,
                window,
                from,
                to,
                application,
                category,
                name,
            };
            let report = client.create(&asked).await?;
            if !wait {
                print(&report);
                return Ok(());
            }
            let id = report["id"].as_str().unwrap_or_default().to_owned();
            eprintln!("report {id} is running");
            let done = client.wait(&id).await?;
            let bytes = client.download(&id, output.as_ref()).await?;
            eprintln!(
                "report {id} complete: {} rows, {bytes} bytes{}",
                done["rows"],
                output.map_or(String::new(), |p| format!(" written to {}", p.display()))
            );
            Ok(())
        }
        ReportCommand::Status { id, admin } => {
            print(&client(admin).status(&id.to_string()).await?);
            Ok(())
        }
        ReportCommand::Download { id, output, admin } => {
            client(admin)
                .download(&id.to_string(), output.as_ref())
                .await?;
            Ok(())
        }
    }
}

async fn schemas(settings: &Settings, command: SchemasCommand) -> anyhow::Result<()> {
    use eye_cli::schemas::{REFUSED, UNUSABLE};
    let unusable_dir = |errors: eye_worker::validation::schema::SchemaErrors| -> ! {
        for error in errors.0 {
            eprintln!("{error}");
        }
        std::process::exit(UNUSABLE)
    };
    match command {
        SchemasCommand::Check { dir } => match eye_cli::schemas::check(settings, &dir) {
            Ok(report) => print!("{report}"),
            Err(errors) => {
                for error in errors.0 {
                    eprintln!("{error}");
                }
                eprint!("{}", eye_cli::schemas::skipped(&dir));
                std::process::exit(1);
            }
        },
        SchemasCommand::Test { dir, file } => {
            let events = std::fs::File::open(&file).unwrap_or_else(|e| {
                eprintln!("{}: cannot read it: {e}", file.display());
                std::process::exit(UNUSABLE)
            });
            let report = eye_cli::schemas::test(settings, &dir, std::io::BufReader::new(events))
                .unwrap_or_else(|unusable| match unusable {
                    eye_cli::schemas::Unusable::Dir(errors) => unusable_dir(errors),
                    eye_cli::schemas::Unusable::Read(e) => {
                        eprintln!("{}: cannot read it: {e}", file.display());
                        std::process::exit(UNUSABLE)
                    }
                });
            print!("{}", report.text);
            if report.refused > 0 {
                std::process::exit(REFUSED);
            }
        }
        SchemasCommand::Reload => {
            if let Some(dir) = &settings.schema_dir
                && let Err(errors) = eye_cli::schemas::check(settings, dir)
            {
                for error in errors.0 {
                    eprintln!("{error}");
                }
                eprintln!(
                    "reload not requested: {} has files that cannot be used, and workers would \
                     keep their types; fix them first",
                    dir.display()
                );
                std::process::exit(1);
            }
            let db = stack::connect(settings.database_url()?).await?;
            let generation = eye_cli::schemas::request_reload(&db).await?;
            eprintln!(
                "reload {generation} requested: every worker reloads its schema_dir within {} ms; \
                 one that finds a broken file logs it (\"schema file refused on reload\") and \
                 keeps its types",
                settings.token_refresh_ms
            );
        }
    }
    Ok(())
}

async fn send(
    settings: &Settings,
    file: Option<PathBuf>,
    url: Option<String>,
    strict: bool,
    client: impl FnOnce(&str) -> eye_client::Builder,
) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| local_url(&settings.api_addr));
    let options = eye_cli::send::SendOptions {
        file: file.filter(|f| f.as_os_str() != "-"),
        strict,
        progress: true,
    };
    let summary = eye_cli::send::run(options, client(&url)).await?;
    print!("{}", summary.render());
    if !summary.all_accepted() {
        std::process::exit(1);
    }
    Ok(())
}

/// Whether `url` names this machine (`localhost`, `127.x.x.x`, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    };
    host.eq_ignore_ascii_case("localhost") || host.starts_with("127.") || host == "::1"
}

/// `http://` and the api's address, with a wildcard address replaced by the loopback.
fn local_url(addr: &str) -> String {
    let addr = addr
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .or_else(|| {
            addr.strip_prefix("[::]:")
                .map(|port| format!("[::1]:{port}"))
        })
        .unwrap_or_else(|| addr.to_owned());
    format!("http://{addr}")
}

async fn api(settings: &Settings) -> anyhow::Result<()> {
    // A wrong secret stops the service before it touches anything else.
    settings.jwt_secret()?;
    let db = stack::connect(settings.database_url()?).await?;
    let queue = Queue::from_settings(settings)?;
    queue.apply_policies(settings).await?;
    let publisher = queue.publisher(settings)?;
    let metrics = eye_cli::metrics::registry(settings);
    let api = eye_api::Api::build(settings, db, publisher, metrics).await?;
    tracing::info!(addr = %settings.api_addr, port = api.port(), "api listening");
    let handle = api.handle();
    let server = tokio::spawn(api.run_until_stopped());
    stack::shutdown_signal().await;
    tracing::info!("stopping: finishing requests in flight");
    handle.stop(true).await;
    server.await??;
    Ok(())
}

async fn admin(settings: &Settings) -> anyhow::Result<()> {
    settings.jwt_secret()?;
    eye_admin::check_settings(settings)?;
    let db = stack::connect(settings.database_url()?).await?;
    let reads = stack::reads(settings, &db).await?;
    // Without a broker URL the dashboard shows the queue as unknown, and dead letters cannot be
    // replayed nor reports asked for from the panel; everything else works.
    let queue = Queue::from_settings(settings).ok();
    let probe = queue
        .as_ref()
        .map_or(QueueProbe::None, |q| q.probe(settings, 0));
    let publishers = match &queue {
        None => eye_admin::Publishers::default(),
        Some(queue) => (|| {
            anyhow::Ok(eye_admin::Publishers {
                dead_letters: Some(queue.publisher(settings)?),
                reports: Some(queue.reports_publisher(settings)?),
            })
        })()
        .context("failed to set up publishing to amqp_url (EYE_AMQP_URL)")?,
    };
    let metrics = eye_cli::metrics::registry(settings);
    let admin = Admin::build(settings, db, reads, probe, publishers, metrics).await?;
    tracing::info!(addr = %settings.admin_addr, port = admin.port(), "admin listening");
    let handle = admin.handle();
    let server = tokio::spawn(admin.run_until_stopped());
    stack::shutdown_signal().await;
    handle.stop(true).await;
    server.await??;
    Ok(())
}

async fn user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create {
        username,
        password_stdin,
    } = command;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("failed to read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first =
            rpassword::prompt_password("Password: ").context("failed to read the password")?;
        let again = rpassword::prompt_password("Again: ").context("failed to read the password")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    };
    let db = stack::connect(settings.database_url()?).await?;
    let user = eye_admin::create_user(&db, &username, &password).await?;
    eprintln!(
        "created `{}`; log in at http://{}/login",
        user.username, settings.admin_addr
    );
    Ok(())
}

async fn worker(settings: &Settings, concurrency: usize) -> anyhow::Result<()> {
    let db = stack::connect(settings.database_url()?).await?;
    // The latest reload request is read before the directory is loaded, so that one made
    // meanwhile is seen as new by the watch.
    let seen = stack::latest_reload(settings, &db).await;
    let validators = stack::load_validators(settings)?;
    let queue = Queue::from_settings(settings)?;
    queue.apply_policies(settings).await?;
    let registry = eye_cli::metrics::registry(settings);
    let listener = if registry.is_enabled() {
        let listener = WorkerListener::start(&settings.worker_metrics_addr, registry.clone())?;
        tracing::info!(addr = %settings.worker_metrics_addr, port = listener.port, "worker metrics listening");
        Some(listener)
    } else {
        None
    };
    let metrics = WorkerMetrics::new(registry);
    let stop = CancellationToken::new();
    let mover = queue.dead_letter_mover(settings, &db, &stop, &metrics);
    let schema_watch = validators.watch(db.clone(), settings.token_refresh(), stop.clone(), seen);
    let upkeep = eye_worker::upkeep::spawn(db.clone(), settings.retention_days, stop.clone());
    let reads = stack::reads(settings, &db).await?;
    let reports = queue
        .spawn_report_runner(settings, &db, &reads, &stop)
        .await?;
    let trends = queue.spawn_trends(settings, &db, &stop);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let worker = Worker::new(db.clone(), queue.consumer(settings), settings, stop.clone())
                .with_metrics(metrics.clone())
                .with_validators(validators.clone());
            stack::spawn_worker(worker)
        })
        .collect();
    stack::shutdown_signal().await;
    tracing::info!("stopping: unacknowledged messages return to the queue");
    stop.cancel();
    let mut drained = 0;
    for worker in workers {
        drained += worker.finish().await.drained;
    }
    if let Some(mover) = mover {
        mover.await?;
    }
    if let Some(schema_watch) = schema_watch {
        schema_watch.await?;
    }
    upkeep.await?;
    reports.await?;
    trends.await?;
    if let Some(listener) = listener {
        listener.stop().await;
    }
    tracing::info!(
        drained,
        "stopped; what was not acknowledged stays on the broker"
    );
    Ok(())
}

async fn migrate(settings: &Settings, rollback: bool) -> anyhow::Result<()> {
    let db = stack::connect(settings.database_url()?).await?;
    if rollback {
        Migrator::down(&db, Some(1))
            .await
            .context("failed to roll back")?;
        eprintln!("rolled back the latest migration");
    } else {
        stack::migrate(&db).await?;
        eprintln!("the schema is up to date");
        // The broker's queue policy too, where a broker is configured.
        if settings.amqp_url.is_some() {
            if eye_cli::broker::apply_policies(settings).await? {
                eprintln!("the queue policies of `{}` are set", settings.queue_prefix);
            } else {
                eprintln!(
                    "amqp_management_url is off: set the queue policies yourself (docs/OPERATIONS.md)"
                );
            }
        }
    }
    Ok(())
}

async fn token(settings: &Settings, command: TokenCommand) -> anyhow::Result<()> {
    // Bad input is refused before anything connects.
    if let TokenCommand::Create {
        publishable: true,
        origins,
        ..
    } = &command
    {
        anyhow::ensure!(
            !origins.is_empty(),
            "--publishable needs at least one --origin: the origin of the web pages that embed the key, e.g. --origin https://shop.example"
        );
        anyhow::ensure!(
            origins.len() <= tokens::MAX_ORIGINS,
            "a publishable key lists at most {} origins",
            tokens::MAX_ORIGINS
        );
    }
    let db = stack::connect(settings.database_url()?).await?;
    match command {
        TokenCommand::Create {
            app,
            publishable: true,
            origins,
            expires_in,
            ..
        } => {
            let keys = TokenKeys::new(settings.jwt_secret()?);
            let expires_in = expires_in.map_or(Duration::from_secs(365 * 86_400), Into::into);
            let lifetime =
                chrono::Duration::from_std(expires_in).context("--expires-in is too long")?;
            let issued = tokens::issue_publishable(&db, &keys, &app, origins, lifetime).await?;
            let origins: Vec<_> = issued.origins.iter().map(WebOrigin::as_str).collect();
            eprintln!(
                "publishable key {} for application `{}` (events:write from {}), expires {}",
                issued.id,
                issued.application.name,
                origins.join(", "),
                issued.expires_at.to_rfc3339()
            );
            eprintln!(
                "embed it in those pages: <script src=\"https://<your api>/eye.js\" data-key=\"<the key>\" defer></script>"
            );
            println!("{}", issued.jwt);
        }
        TokenCommand::Create {
            app,
            scopes,
            all_applications,
            expires_in,
            ..
        } => {
            let keys = TokenKeys::new(settings.jwt_secret()?);
            let expires_in = expires_in.map_or(Duration::from_secs(90 * 86_400), Into::into);
            let lifetime =
                chrono::Duration::from_std(expires_in).context("--expires-in is too long")?;
            let mut scopes: HashSet<Scope> = scopes.into_iter().collect();
            if all_applications {
                scopes.extend([Scope::EventsRead, Scope::EventsReadAll]);
            }
            if scopes.is_empty() {
                scopes.insert(Scope::EventsWrite);
            }
            let issued = tokens::issue(&db, &keys, &app, scopes, lifetime).await?;
            let mut names: Vec<_> = issued.scopes.iter().map(|s| s.as_str()).collect();
            names.sort_unstable();
            eprintln!(
                "token {} for application `{}` ({}), expires {}",
                issued.id,
                issued.application.name,
                names.join(","),
                issued.expires_at.to_rfc3339()
            );
            if issued.scopes.contains(&Scope::EventsReadAll) {
                eprintln!("it reads the events of every application");
            }
            println!("{}", issued.jwt);
        }
        TokenCommand::List => {
            let now = chrono::Utc::now();
            println!(
                "{:<36}  {:<20}  {:<40}  {:<25}  {:<12}  PUBLISHABLE FROM",
                "ID", "APPLICATION", "SCOPES", "EXPIRES", "STATE"
            );
            for (token, app) in tokens::list(&db).await? {
                let state = tokens::state(&token, &app, now);
                let expires = token.expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
                let origins = tokens::origins(&token).map_or_else(String::new, |origins| {
                    let names: Vec<_> = origins.iter().map(WebOrigin::as_str).collect();
                    names.join(",")
                });
                let line = format!(
                    "{:<36}  {:<20}  {:<40}  {:<25}  {state:<12}  {origins}",
                    token.id, app.name, token.scopes, expires
                );
                println!("{}", line.trim_end());
            }
        }
        TokenCommand::Revoke { id } => {
            anyhow::ensure!(tokens::revoke(&db, id).await?, "no token has the id {id}");
            eprintln!(
                "revoked {id}; every api refuses it within {} ms",
                settings.token_refresh_ms
            );
        }
    }
    Ok(())
}

async fn retention(settings: &Settings, command: RetentionCommand) -> anyhow::Result<()> {
    use eye_entity::partitions;
    let db = stack::connect(settings.database_url()?).await?;
    match command {
        RetentionCommand::Apply { older_than } => {
            let age = chrono::TimeDelta::from_std(older_than.into())
                .ok()
                .filter(|age| *age >= chrono::TimeDelta::days(1))
                .context("--older-than must be at least a day (e.g. 400d)")?;
            let cutoff = chrono::Utc::now()
                .checked_sub_signed(age)
                .context("--older-than reaches before any date")?;
            let removed = partitions::apply_retention(&db, cutoff).await?;
            for partition in &removed.partitions {
                println!("dropped partition {partition}");
            }
            println!(
                "removed what is older than {}: {} partitions, {} more events, {} rejected events, {} sessions",
                cutoff.format("%Y-%m-%d %H:%M:%S UTC"),
                removed.partitions.len(),
                removed.events,
                removed.rejected_events,
                removed.sessions
            );
        }
        RetentionCommand::Status => {
            anyhow::ensure!(
                db.get_database_backend() == sea_orm::DbBackend::Postgres,
                "only PostgreSQL partitions its tables; on SQLite `eye retention apply` deletes rows"
            );
            for table in partitions::TABLES {
                for (partition, month) in partitions::list(&db, table).await? {
                    println!("{}\t{}\t{partition}", table.name, month.format("%Y-%m"));
                }
            }
        }
    }
    Ok(())
}

async fn dead(settings: &Settings, command: DeadCommand) -> anyhow::Result<()> {
    let db = stack::connect(settings.database_url()?).await?;
    match command {
        DeadCommand::List { limit } => eye_cli::dead::list(&db, limit).await,
        DeadCommand::Replay { ids, all } => {
            let selection = if all {
                Selection::All
            } else {
                Selection::Ids(ids)
            };
            eye_cli::dead::replay(settings, &db, selection).await
        }
        DeadCommand::Discard { ids } => eye_cli::dead::discard(&db, &ids).await,
    }
}

async fn app(settings: &Settings, command: AppCommand) -> anyhow::Result<()> {
    // Bad input is refused before anything connects.
    let limit = match &command {
        AppCommand::Limit {
            rate: Some(rate),
            burst: Some(burst),
            ..
        } => Some(RateLimit::new(*rate, *burst).context("--burst")?),
        _ => None,
    };
    let db = stack::connect(settings.database_url()?).await?;
    let (name, disabled) = match command {
        AppCommand::List => return app_list(settings, &db).await,
        AppCommand::Limit { name, .. } => {
            let app = rate_limits::set(&db, &name, limit).await?;
            match limit {
                Some(limit) => {
                    eprintln!(
                        "application `{}` may send {limit} events per api instance; every api applies it within {} ms",
                        app.name, settings.token_refresh_ms
                    );
                    if (limit.burst.get() as usize) < settings.max_events_per_request {
                        eprintln!(
                            "note: a request of more than {} events will be refused with 413 batch_over_burst",
                            limit.burst
                        );
                    }
                }
                None => eprintln!(
                    "application `{}` uses the default limit again ({} events per api instance); every api applies it within {} ms",
                    app.name,
                    settings.rate_limit(),
                    settings.token_refresh_ms
                ),
            }
            return Ok(());
        }
        AppCommand::Disable { name } => (name, true),
        AppCommand::Enable { name } => (name, false),
    };
    tokens::set_application_disabled(&db, &name, disabled).await?;
    eprintln!(
        "application `{name}` is now {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}

async fn app_list(settings: &Settings, db: &sea_orm::DatabaseConnection) -> anyhow::Result<()> {
    let default = settings.rate_limit();
    println!(
        "{:<30}  {:<8}  {:<45}  CREATED",
        "NAME", "STATE", "RATE LIMIT (EVENTS PER API INSTANCE)"
    );
    for app in tokens::applications(db).await? {
        let limit = match rate_limits::override_of(&app) {
            Some(limit) => limit.to_string(),
            None => format!("default: {default}"),
        };
        let state = if app.disabled { "disabled" } else { "enabled" };
        let created = app.created_at.format("%Y-%m-%d %H:%M UTC");
        println!("{:<30}  {state:<8}  {limit:<45}  {created}", app.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_is_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost/v1",
            "https://[::1]:8080",
            "127.0.0.2:80",
        ] {
            assert!(super::is_loopback(url), "{url}");
        }
        for url in [
            "http://eye.example.com",
            "http://10.0.0.7:8080",
            "https://[2001:db8::1]:8080",
        ] {
            assert!(!super::is_loopback(url), "{url}");
        }
    }
}
