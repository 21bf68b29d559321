use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use paddock_controller::client::Security;
use paddock_controller::commands::{self, Context};
use paddock_controller::exit::{Exit, error_text};
use paddock_controller::lab;

/// paddock: deploy and operate highly available Redis on plain machines
/// through paddockd agents.
#[derive(Parser)]
#[command(name = "paddock", version, about)]
struct Cli {
    /// Talk to agents without TLS (they must run with insecure_plaintext =
    /// true). Anyone on the network could then drive them: labs only.
    #[arg(long, global = true)]
    insecure_plaintext: bool,
    /// Act on these hosts only (names or addresses, comma-separated), as
    /// ansible's --limit: status shows only them, plan and apply change
    /// only their instances and name what they skip, failover refuses a
    /// shard with a member elsewhere, events watch only them. Hosts whose
    /// agent does not answer are skipped and named in any case.
    #[arg(long, global = true, value_delimiter = ',', value_name = "HOST,...")]
    limit: Vec<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check an inventory and report every problem at once.
    ///
    /// Example: paddock validate -i inventory/examples/vagrant-lab.toml
    Validate {
        #[arg(short, long)]
        inventory: PathBuf,
    },
    /// Show what apply would change, changing nothing.
    ///
    /// Example: paddock plan -i inventory.toml
    Plan {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Print the typed steps as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to change, 2 when changes are
        /// pending, 1 on error (as terraform plan does).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan to FILE for `paddock apply FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Push configs, start instances and form the topology. Idempotent.
    ///
    /// Example: paddock apply -i inventory.toml
    Apply {
        #[arg(short, long, required_unless_present = "plan_file")]
        inventory: Option<PathBuf>,
        /// A plan saved by `paddock plan --out FILE`: apply carries it out,
        /// or refuses it when what it was planned from changed.
        plan_file: Option<PathBuf>,
        /// Give up forming the cluster after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print the steps carried out as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hosts, instances, roles, slots and links.
    ///
    /// Example: paddock status -i inventory.toml --json
    Status {
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a cluster as `redis-cli --cluster check` does (slot coverage,
    /// open slots, every node agreeing on the configuration) and more:
    /// a master and its replica on one host, masters piled on a host,
    /// replicas per master, replication lag, sentinels, zones. Exit 0
    /// with no finding, 1 with findings, 3 when an agent does not answer.
    ///
    /// Example: paddock check -i inventory.toml --json
    Check {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repair open slots (an interrupted migration: finished or rolled
    /// back) and slots no master serves, as apply does; needs every agent.
    /// Exit 0 when nothing is left open, 1 otherwise.
    ///
    /// Example: paddock fix -i inventory.toml
    Fix {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Give up moving a slot's keys after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print what was found, done and left as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop instances of the deployment: all of them when none is named.
    /// Sentinels stop first, then replicas, then masters. They stay stopped
    /// (across agent restarts too) until `paddock start` or `paddock apply`.
    /// A master stopped alone is not handed over first: its shard waits for
    /// Redis's own failover (use `paddock restart` for maintenance).
    ///
    /// Example: paddock stop -i inventory.toml
    /// Example: paddock stop -i inventory.toml clusternodeA
    /// Example: paddock stop -i inventory.toml clusternodeA:redis-7001
    Stop {
        #[arg(short, long)]
        inventory: PathBuf,
        /// HOST (all of its instances) or HOST:INSTANCE; none: every
        /// instance of the deployment.
        targets: Vec<String>,
    },
    /// Start stopped instances of the deployment: all of them when none is
    /// named. Each answers once its Redis does.
    ///
    /// Example: paddock start -i inventory.toml
    /// Example: paddock start -i inventory.toml clusternodeA:redis-7001
    Start {
        #[arg(short, long)]
        inventory: PathBuf,
        /// HOST (all of its instances) or HOST:INSTANCE; none: every
        /// instance of the deployment.
        targets: Vec<String>,
    },
    /// Restart instances one at a time, as apply does for a config change:
    /// replicas first, a master hands its role to an in-sync replica first
    /// (no acknowledged write lost), and the deployment is healthy again
    /// before the next one.
    ///
    /// Example: paddock restart -i inventory.toml
    /// Example: paddock restart -i inventory.toml clusternodeB
    Restart {
        #[arg(short, long)]
        inventory: PathBuf,
        /// HOST (all of its instances) or HOST:INSTANCE; none: every
        /// instance of the deployment.
        targets: Vec<String>,
        /// How long each instance may take to be back and the deployment
        /// healthy again, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Stop and remove the instances of the deployment that the inventory
    /// no longer lists, once they serve no slots and hold no master role
    /// (those that still do are named and kept). Their data stays on disk
    /// unless --purge-data.
    ///
    /// Example: paddock prune -i inventory.toml
    /// Example: paddock prune -i inventory.toml --purge-data
    Prune {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Also delete the removed instances' data (nodes.conf, AOF, RDB, logs).
        #[arg(long)]
        purge_data: bool,
    },
    /// Stop and remove every instance of the deployment on every agent.
    /// Asks for the deployment's name on a terminal; --yes otherwise.
    /// Their data stays on disk unless --purge-data.
    ///
    /// Example: paddock destroy -i inventory.toml
    /// Example: paddock destroy -i inventory.toml --yes --purge-data
    Destroy {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Do not ask: required when stdin is not a terminal.
        #[arg(long)]
        yes: bool,
        /// Also delete the instances' data (nodes.conf, AOF, RDB, logs).
        #[arg(long)]
        purge_data: bool,
    },
    /// Break the deployment's lease on every agent, whoever holds it, and
    /// say whose it was. Only for a controller that cannot release it
    /// itself (its machine is gone): a live one keeps renewing its lease
    /// and must be stopped first.
    ///
    /// Example: paddock unlock -i inventory.toml --force
    Unlock {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Required: breaking another controller's lease lets two
        /// controllers change the deployment at once if it still runs.
        #[arg(long)]
        force: bool,
    },
    /// Hand a master's role (a shard's slots, in a cluster) to one of its
    /// replicas, losing no acknowledged write. With Sentinel, the sentinels
    /// run the switch (SENTINEL FAILOVER).
    ///
    /// Example: paddock failover -i replication.toml
    /// Example: paddock failover -i inventory.toml --shard 0
    /// Example: paddock failover -i inventory.toml --to clusternodeB:redis-7001
    Failover {
        #[arg(short, long)]
        inventory: PathBuf,
        /// The shard (0-based, as in `paddock validate`): its most
        /// up-to-date replica takes over. Replication and sentinel
        /// topologies have one shard, the default there.
        #[arg(long, conflicts_with = "to")]
        shard: Option<u32>,
        /// The replica that takes over, as HOST:INSTANCE.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Spread a cluster's slots evenly over its masters (or by host
    /// weights), moving keys with verified MIGRATE batches, as redis-cli's
    /// `--cluster rebalance`. Refuses a cluster that is not healthy or has
    /// open slots (see `paddock fix`).
    ///
    /// Example: paddock rebalance -i inventory.toml
    /// Example: paddock rebalance -i inventory.toml --weight clusternodeC=0
    Rebalance {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Move nothing while every master is within PCT percent of its
        /// share.
        #[arg(long, value_name = "PCT", default_value_t = paddock_controller::slots::DEFAULT_THRESHOLD_PCT)]
        threshold: f64,
        /// The relative share of the masters on HOST (default 1; 0 drains
        /// them). Repeatable.
        #[arg(long, value_name = "HOST=W", value_parser = paddock_controller::rebalance::parse_weight)]
        weight: Vec<(String, u32)>,
        /// Print the moves and what was moved as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a HELD master empty. An agent holds down a master that keeps
    /// no data on disk while a replica may still hold its data set, and
    /// keeps asking the replicas to take over; when none will come back,
    /// this starts it empty after saying what that loses.
    ///
    /// Example: paddock recover -i inventory.toml clusternodeA:redis-7000
    /// Example: paddock recover -i inventory.toml clusternodeA:redis-7000 --accept-data-loss
    Recover {
        #[arg(short, long)]
        inventory: PathBuf,
        /// The held instance, as HOST:INSTANCE (see `paddock status`).
        instance: String,
        /// Start it empty although its replicas may hold its data.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// Change the Redis password with no failed request: both work until
    /// `--finish`, which clients should wait for until they switched.
    ///
    /// Example: paddock rotate-password -i inventory.toml
    /// Example: paddock rotate-password -i inventory.toml --finish
    RotatePassword {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Remove the old password (after every client uses the new one).
        #[arg(long)]
        finish: bool,
    },
    /// Print an instance's Redis log through its agent.
    ///
    /// Example: paddock logs -i inventory.toml clusternodeA redis-7000 -f
    Logs {
        #[arg(short, long)]
        inventory: PathBuf,
        /// The host's name in the inventory.
        host: String,
        /// The instance, e.g. redis-7000 (see `paddock status`).
        instance: String,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print instance state changes (crashes, restarts, stops) from every agent live.
    ///
    /// Example: paddock events -i inventory.toml
    Events {
        #[arg(short, long)]
        inventory: PathBuf,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The local three-box lab on loopback addresses.
    #[command(subcommand)]
    Lab(LabCmd),
    /// Certificates for mutual TLS between this controller and the agents.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Print the shell completion script for bash, zsh or fish.
    ///
    /// Example: paddock completions bash > /etc/bash_completion.d/paddock
    /// Example: paddock completions zsh > "${fpath[1]}/_paddock"
    /// Example: paddock completions fish > ~/.config/fish/completions/paddock.fish
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create the deployment's CA and this controller's client certificate
    /// (in .paddock/DEPLOYMENT/certs next to the inventory; kept if present).
    ///
    /// Example: paddock certs init -i inventory.toml
    Init {
        #[arg(short, long)]
        inventory: PathBuf,
    },
    /// Issue the certificate a host's agent serves with, naming the host's
    /// inventory name and address; copy the three printed files to the host.
    ///
    /// Example: paddock certs issue -i inventory.toml clusternodeA
    Issue {
        #[arg(short, long)]
        inventory: PathBuf,
        /// The host's name in the inventory.
        host: String,
        /// Also copy the three files the host needs into DIR as ca.pem,
        /// agent.pem and agent.key (what packaging/provision.sh --certs reads).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Start the lab's agents (three boxes by default), apply its inventory, print status.
    ///
    /// Example: paddock lab up --dir ./paddock-lab
    Up {
        #[arg(long, default_value = "paddock-lab")]
        dir: PathBuf,
        /// The boxes' addresses (box1, box2, ...), three or more, comma
        /// separated. On an existing lab, addresses added at the end start
        /// new boxes; the running ones are kept.
        #[arg(long, value_delimiter = ',', default_values_t = lab::DEFAULT_ADDRESSES.map(|a| a.parse::<IpAddr>().expect("literal")))]
        addresses: Vec<IpAddr>,
        /// First Redis port on each box.
        #[arg(long, default_value_t = 7000)]
        port: u16,
        /// The port every box's agent listens on.
        #[arg(long, default_value_t = 7443)]
        agent_port: u16,
        /// Start the agents and write the inventory, but do not apply it.
        #[arg(long)]
        no_apply: bool,
        /// Agents restart a crashed master in place instead of having its
        /// replica take over first (to compare failover times).
        #[arg(long)]
        no_fast_failover: bool,
        /// cluster (3 masters x 1 replica), replication (1 master and a
        /// read replica on each other box) or sentinel (the same, plus a
        /// sentinel on each box). Default: the existing lab's, else cluster.
        #[arg(long, value_parser = ["cluster", "replication", "sentinel"])]
        topology: Option<String>,
        /// Stop the lab already in DIR and delete its data, inventory and
        /// certificates first (needed to change its topology, addresses or
        /// ports).
        #[arg(long)]
        reset: bool,
    },
    /// Status of the lab's deployment.
    ///
    /// Example: paddock lab status --dir ./paddock-lab
    Status {
        #[arg(long, default_value = "paddock-lab")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop every process the lab started.
    ///
    /// Example: paddock lab down --dir ./paddock-lab
    Down {
        #[arg(long, default_value = "paddock-lab")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("paddock: cannot start the runtime: {e}");
            return Exit::Failed.into();
        }
    };
    // With --detailed-exitcode, 2 means "changes pending": every error is
    // 1 there, as terraform's.
    let detailed = matches!(
        cli.command,
        Cmd::Plan {
            detailed_exitcode: true,
            ..
        }
    );
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("paddock: error: {}", error_text(&e));
            if detailed { Exit::Failed } else { e.exit() }.into()
        }
    }
}

async fn run(cli: Cli) -> Result<Exit, paddock_controller::Error> {
    let ctx = Context {
        limit: cli.limit,
        security: if cli.insecure_plaintext {
            Security::InsecurePlaintext
        } else {
            Security::MutualTls
        },
    };
    ctx.check_limit(matches!(
        cli.command,
        Cmd::Status { .. }
            | Cmd::Plan { .. }
            | Cmd::Apply { .. }
            | Cmd::Failover { .. }
            | Cmd::Events { .. }
            | Cmd::Lab(LabCmd::Status { .. })
    ))?;
    match cli.command {
        Cmd::Completions { shell } => completions(shell),
        Cmd::Certs(cmd) => certs(cmd),
        Cmd::Validate { inventory } => commands::validate(&inventory),
        Cmd::Plan {
            inventory,
            json,
            detailed_exitcode,
            out,
        } => commands::plan(&inventory, json, detailed_exitcode, out.as_deref(), &ctx).await,
        Cmd::Apply {
            inventory,
            plan_file,
            timeout,
            json,
        } => {
            let timeout = Duration::from_secs(timeout);
            commands::apply(
                inventory.as_deref(),
                plan_file.as_deref(),
                timeout,
                json,
                &ctx,
            )
            .await
        }
        Cmd::Status { inventory, json } => commands::status(&inventory, json, &ctx).await,
        Cmd::Check { inventory, json } => commands::check(&inventory, json, &ctx).await,
        Cmd::Fix {
            inventory,
            timeout,
            json,
        } => commands::fix(&inventory, Duration::from_secs(timeout), json, &ctx).await,
        Cmd::Recover {
            inventory,
            instance,
            accept_data_loss,
        } => commands::recover(&inventory, &instance, accept_data_loss, &ctx).await,
        Cmd::Stop { inventory, targets } => commands::stop(&inventory, &targets, &ctx).await,
        Cmd::Start { inventory, targets } => commands::start(&inventory, &targets, &ctx).await,
        Cmd::Restart {
            inventory,
            targets,
            timeout,
        } => commands::restart(&inventory, &targets, Duration::from_secs(timeout), &ctx).await,
        Cmd::Prune {
            inventory,
            purge_data,
        } => commands::prune(&inventory, purge_data, &ctx).await,
        Cmd::Destroy {
            inventory,
            yes,
            purge_data,
        } => commands::destroy(&inventory, yes, purge_data, &ctx).await,
        Cmd::Unlock { inventory, force } => commands::unlock(&inventory, force, &ctx).await,
        Cmd::Failover {
            inventory,
            shard,
            to,
            timeout,
        } => commands::failover(&inventory, shard, to, Duration::from_secs(timeout), &ctx).await,
        Cmd::Rebalance {
            inventory,
            threshold,
            weight,
            json,
        } => commands::rebalance(&inventory, threshold, weight, json, &ctx).await,
        Cmd::RotatePassword { inventory, finish } => {
            commands::rotate_password(&inventory, finish, &ctx).await
        }
        Cmd::Logs {
            inventory,
            host,
            instance,
            lines,
            follow,
        } => commands::logs(&inventory, &host, &instance, lines, follow, &ctx).await,
        Cmd::Events {
            inventory,
            count,
            seconds,
            json,
        } => commands::events(&inventory, count, seconds, json, &ctx).await,
        Cmd::Lab(cmd) => lab(cmd, &ctx).await,
    }
}

/// `paddock certs ...`: local files only, no agent involved.
fn certs(cmd: CertsCmd) -> Result<Exit, paddock_controller::Error> {
    match cmd {
        CertsCmd::Init { inventory } => commands::certs_init(&inventory),
        CertsCmd::Issue {
            inventory,
            host,
            out,
        } => commands::certs_issue(&inventory, &host, out.as_deref()),
    }
}

/// `paddock lab ...`: the local lab deployment.
async fn lab(cmd: LabCmd, ctx: &Context) -> Result<Exit, paddock_controller::Error> {
    match cmd {
        LabCmd::Up {
            dir,
            addresses,
            port,
            agent_port,
            no_apply,
            no_fast_failover,
            topology,
            reset,
        } => {
            let args = commands::LabUp {
                dir,
                addresses,
                port,
                agent_port,
                no_apply,
                no_fast_failover,
                topology,
                reset,
            };
            commands::lab_up(args, ctx).await
        }
        LabCmd::Status { dir, json } => commands::lab_status(&dir, json, ctx).await,
        LabCmd::Down { dir } => commands::lab_down(&dir, ctx).await,
    }
}

/// The completion script: into a buffer first, as clap_complete panics on
/// a closed pipe (`paddock completions bash | head`).
fn completions(shell: clap_complete::Shell) -> Result<Exit, paddock_controller::Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "paddock", &mut script);
    let _ = paddock_controller::output::write(format_args!("{}", String::from_utf8_lossy(&script)));
    Ok(Exit::Done)
}

/// The CLI as clap derives it, plus what every subcommand (also one added
/// later) should show the same way: help for the flags many share, and each
/// `Example:` on its own line (clap joins a doc comment's lines).
fn command() -> clap::Command {
    fn finish(cmd: clap::Command) -> clap::Command {
        let cmd = match cmd.get_long_about().map(ToString::to_string) {
            Some(long) if long.contains(" Example: ") => {
                cmd.long_about(long.replace(" Example: ", "\nExample: "))
            }
            _ => cmd,
        };
        cmd.mut_args(|arg| {
            if arg.get_help().is_some() {
                return arg;
            }
            match arg.get_id().as_str() {
                "inventory" => arg.help("The inventory file (TOML) describing the deployment"),
                "json" => arg.help("Print JSON instead of text"),
                "timeout" => arg.help("Give up after this many seconds"),
                "dir" => arg.help(
                    "The lab's directory: its inventory, certificates, agents' data and logs",
                ),
                _ => arg,
            }
        })
        .mut_subcommands(finish)
    }
    finish(<Cli as clap::CommandFactory>::command())
}
