//! `eye`: one binary for every part of The Eye and its operator commands.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eye_admin::{Admin, QueueProbe};
use eye_cli::dev;
use eye_cli::stack::{self, Queue};
use eye_core::Settings;
use eye_core::token::{Scope, TokenKeys};
use eye_entity::dead::Selection;
use eye_entity::tokens;
use eye_migration::{Migrator, MigratorTrait};
use eye_worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
        #[arg(long, default_value_t = 1)]
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
        /// How long the token lives, e.g. 90d, 12h, 1y.
        #[arg(long, default_value = "90d")]
        expires_in: humantime::Duration,
    },
    /// Lists every token with its application, scopes, expiry and state.
    List,
    /// Revokes a token; every api refuses it within `token_refresh_ms`.
    Revoke { id: Uuid },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Refuses every token of the application.
    Disable { name: String },
    /// Accepts the application's tokens again.
    Enable { name: String },
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
    eye_core::telemetry::init(settings.log_format);
    match cli.command {
        Command::Dev { .. } => Ok(()),
        Command::Api => api(&settings).await,
        Command::Admin => admin(&settings).await,
        Command::Worker { concurrency } => worker(&settings, concurrency).await,
        Command::Migrate { rollback } => migrate(&settings, rollback).await,
        Command::Token(command) => token(&settings, command).await,
        Command::App(command) => app(&settings, command).await,
        Command::User(command) => user(&settings, command).await,
        Command::Dead(command) => dead(&settings, command).await,
    }
}

async fn api(settings: &Settings) -> anyhow::Result<()> {
    // A wrong secret stops the service before it touches anything else.
    settings.jwt_secret()?;
    let db = stack::connect(settings.database_url()?).await?;
    let queue = Queue::from_settings(settings)?;
    queue.apply_policies(settings).await?;
    let publisher = queue.publisher(settings)?;
    let api = eye_api::Api::build(settings, db, publisher).await?;
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
    // Without a broker URL the dashboard shows the queue as unknown and dead letters cannot be
    // replayed from the panel; everything else works.
    let queue = Queue::from_settings(settings).ok();
    let probe = queue
        .as_ref()
        .map_or(QueueProbe::None, |q| q.probe(settings, 0));
    let publisher = queue
        .map(|q| q.publisher(settings))
        .transpose()
        .context("failed to set up publishing to amqp_url (EYE_AMQP_URL)")?;
    let admin = Admin::build(settings, db, probe, publisher).await?;
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
    let queue = Queue::from_settings(settings)?;
    queue.apply_policies(settings).await?;
    let stop = CancellationToken::new();
    let mover = queue.dead_letter_mover(settings, &db, &stop);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            stack::spawn_worker(Worker::new(
                db.clone(),
                queue.consumer(settings),
                settings,
                stop.clone(),
            ))
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
    let db = stack::connect(settings.database_url()?).await?;
    match command {
        TokenCommand::Create {
            app,
            scopes,
            all_applications,
            expires_in,
        } => {
            let keys = TokenKeys::new(settings.jwt_secret()?);
            let lifetime = chrono::Duration::from_std(expires_in.into())
                .context("--expires-in is too long")?;
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
                "{:<36}  {:<20}  {:<40}  {:<25}  STATE",
                "ID", "APPLICATION", "SCOPES", "EXPIRES"
            );
            for (token, app) in tokens::list(&db).await? {
                let state = tokens::state(&token, &app, now);
                let expires = token.expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
                println!(
                    "{:<36}  {:<20}  {:<40}  {:<25}  {state}",
                    token.id, app.name, token.scopes, expires
                );
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
    let db = stack::connect(settings.database_url()?).await?;
    let (name, disabled) = match command {
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
