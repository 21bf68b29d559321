use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paddock_controller::{apply, failover, lab, lifecycle, status, watch};
use std::io::IsTerminal;

// Everything this file prints goes through `output::write`, which survives
// a closed stdout (`paddock status | head -1`): these shadow std's macros,
// which panic there.
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = paddock_controller::output::write(format_args!("{}\n", format_args!($($arg)*)));
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = paddock_controller::output::write(format_args!($($arg)*));
    }};
}

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
    /// Start three agents, apply the lab's cluster inventory, print status.
    ///
    /// Example: paddock lab up --dir ./paddock-lab
    Up {
        #[arg(long, default_value = "paddock-lab")]
        dir: PathBuf,
        /// The boxes' addresses, comma separated.
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
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("paddock: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.insecure_plaintext {
        paddock_controller::client::use_insecure_plaintext();
    }
    let limit = cli.limit;
    let limited = matches!(
        cli.command,
        Cmd::Status { .. }
            | Cmd::Plan { .. }
            | Cmd::Apply { .. }
            | Cmd::Failover { .. }
            | Cmd::Events { .. }
            | Cmd::Lab(LabCmd::Status { .. })
    );
    if !limit.is_empty() && !limited {
        // Silently acting on every host would be the opposite of asked.
        anyhow::bail!(
            "--limit is supported by status, plan, apply, failover and events; this command acts on the hosts it names"
        );
    }
    match cli.command {
        Cmd::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a closed pipe
            // (`paddock completions bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "paddock", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Cmd::Certs(CertsCmd::Init { inventory }) => {
            let inv = read_inventory(&inventory)?;
            let dir = paddock_controller::certs::certs_dir(&inventory, &inv.deployment.name);
            let created = paddock_controller::certs::init(&dir, &inv.deployment.name)?;
            println!(
                "{} CA and controller certificate in {}",
                if created {
                    "Created"
                } else {
                    "Kept the existing"
                },
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Certs(CertsCmd::Issue {
            inventory,
            host,
            out,
        }) => {
            let inv = read_inventory(&inventory)?;
            let Some(h) = inv.hosts.iter().find(|h| h.name == host) else {
                let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
                anyhow::bail!(
                    "no host named {host:?} in {}; its hosts are: {}",
                    inventory.display(),
                    names.join(", ")
                );
            };
            let dir = paddock_controller::certs::certs_dir(&inventory, &inv.deployment.name);
            let files = paddock_controller::certs::issue(&dir, &h.name, h.address)?;
            println!(
                "Issued {host}'s certificate (names {host} and {}). Install on the host, referenced from agent.toml [tls]:\n  ca   = {}\n  cert = {}\n  key  = {}  (keep it 0600)",
                h.address,
                paddock_controller::certs::ca(&dir).cert.display(),
                files.cert.display(),
                files.key.display()
            );
            if let Some(out) = out {
                paddock_controller::certs::export(&dir, &files, &out)?;
                println!(
                    "Copied them to {} as ca.pem, agent.pem, agent.key",
                    out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate { inventory } => {
            let bytes = std::fs::read(&inventory)
                .with_context(|| format!("cannot read {}", inventory.display()))?;
            match paddock_inventory::parse_bytes(&inventory.display().to_string(), &bytes) {
                Ok(inv) => {
                    let placement = paddock_inventory::place(&inv);
                    println!(
                        "{}: ok ({} topology, {} instances on {} hosts)",
                        inventory.display(),
                        inv.deployment.topology,
                        placement.instances.len(),
                        inv.hosts.len()
                    );
                    for p in &placement.instances {
                        println!(
                            "  {:<14} {:<16} shard {} {}",
                            inv.hosts[p.host].name, p.name, p.shard, p.role
                        );
                    }
                    for w in paddock_inventory::warnings(&inv) {
                        println!("{}: {w}", inventory.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(d) => {
                    eprintln!("{d}");
                    eprintln!("{} problem(s) found", d.0.len());
                    Ok(ExitCode::from(2))
                }
            }
        }
        Cmd::Plan {
            inventory,
            json,
            detailed_exitcode,
            out,
        } => {
            let code =
                apply::plan_command(&inventory, &limit, json, detailed_exitcode, out.as_deref())
                    .await?;
            Ok(ExitCode::from(code))
        }
        Cmd::Apply {
            inventory,
            plan_file,
            timeout,
            json,
        } => {
            let report = apply::apply_command(
                inventory.as_deref(),
                plan_file.as_deref(),
                &apply::ApplyOptions {
                    converge_timeout: Duration::from_secs(timeout),
                    limit: limit.clone(),
                    ..Default::default()
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                print_apply(&report);
            }
            // As ansible-playbook for unreachable hosts: done where it
            // could be, but not everywhere the deployment needs.
            Ok(if report.incomplete {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Status { inventory, json } => {
            let s = status::status(&inventory, &limit).await?;
            print_status(&s, json)?;
            Ok(if s.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Recover {
            inventory,
            instance,
            accept_data_loss,
        } => {
            let loss =
                paddock_controller::recover::recover(&inventory, &instance, accept_data_loss)
                    .await?;
            println!("{loss}");
            println!("{instance} started empty; `paddock apply` re-forms its shard.");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop { inventory, targets } => {
            let done = lifecycle::stop(&inventory, &targets, true).await?;
            print_outcomes("Stopped", &done);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start { inventory, targets } => {
            let done = lifecycle::start(&inventory, &targets, true).await?;
            print_outcomes("Started", &done);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restart {
            inventory,
            targets,
            timeout,
        } => {
            let done = lifecycle::restart(&inventory, &targets, Duration::from_secs(timeout), true)
                .await?;
            print_outcomes("Restarted", &done);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Prune {
            inventory,
            purge_data,
        } => {
            let report = lifecycle::prune(&inventory, purge_data, true).await?;
            if report.removed.is_empty() && report.kept.is_empty() {
                println!("Nothing to prune: every instance of the deployment is in the inventory.");
            }
            for r in &report.removed {
                println!(
                    "removed {r}{}",
                    if purge_data {
                        " and its data"
                    } else {
                        " (its data stays on disk)"
                    }
                );
            }
            for (k, why) in &report.kept {
                println!("kept {k}: {why}");
            }
            if !report.removed.is_empty() && inventory_is_cluster(&inventory) {
                println!(
                    "`paddock apply -i {}` makes the cluster forget the removed nodes.",
                    inventory.display()
                );
            }
            Ok(if report.kept.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Destroy {
            inventory,
            yes,
            purge_data,
        } => {
            let name = read_inventory(&inventory)?.deployment.name;
            let typed = if yes {
                None
            } else if std::io::stdin().is_terminal() {
                eprint!(
                    "This stops and removes every instance of deployment {name}{}. Type its name to confirm: ",
                    if purge_data {
                        " and deletes their data"
                    } else {
                        ""
                    }
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line)
            } else {
                anyhow::bail!(
                    "destroy stops and removes every instance of deployment {name}; stdin is not a terminal, so it cannot ask for the name: add --yes"
                );
            };
            if !lifecycle::destroy_confirmed(yes, typed.as_deref(), &name) {
                anyhow::bail!(
                    "not confirmed (the name typed is not {name:?}): nothing was changed"
                );
            }
            let removed = lifecycle::destroy(&inventory, purge_data, true).await?;
            println!(
                "Destroyed {name}: removed {} instance(s){}",
                removed.len(),
                if purge_data {
                    " and their data"
                } else {
                    "; their data stays on disk"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Unlock { inventory, force } => {
            if !force {
                anyhow::bail!(
                    "unlock breaks another controller's lease: add --force once you know it no longer runs"
                );
            }
            let deployment = paddock_controller::fleet::Deployment::load(&inventory, false)?;
            let fleet = paddock_controller::fleet::Fleet::connect(&deployment).await;
            let mut failed = false;
            for (host, outcome) in fleet.break_lease(&deployment).await {
                match outcome {
                    Ok(Some(h)) => println!(
                        "{host}: broke the lease of {} (since {})",
                        h.holder,
                        paddock_controller::utc::format_utc(h.since_unix_ms)
                    ),
                    Ok(None) => println!("{host}: no lease"),
                    Err(e) => {
                        failed = true;
                        println!("{host}: {e}");
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Failover {
            inventory,
            shard,
            to,
            timeout,
        } => {
            let choice = match (shard, to) {
                (Some(s), _) => failover::Choice::Shard(s),
                (None, Some(t)) => failover::Choice::Replica(t),
                (None, None) => failover::Choice::Default,
            };
            let r = failover::failover(
                &inventory,
                &choice,
                Duration::from_secs(timeout),
                true,
                &limit,
            )
            .await?;
            if r.already_master {
                println!(
                    "Shard {}: {} is already its master; nothing to do.",
                    r.shard, r.to
                );
            } else {
                println!(
                    "Shard {}: {} is master now, {} its replica ({:.3}s).",
                    r.shard,
                    r.to,
                    r.from,
                    r.took.as_secs_f64()
                );
            }
            for p in &r.balance {
                println!("Note: {p}.");
            }
            if !r.balance.is_empty() {
                println!(
                    "`paddock status` reports this until `paddock apply` spreads the masters again (it may undo this failover)."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RotatePassword { inventory, finish } => {
            let message = paddock_controller::rotate::rotate(&inventory, finish, true).await?;
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs {
            inventory,
            host,
            instance,
            lines,
            follow,
        } => {
            watch::logs(&inventory, &host, &instance, lines, follow).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Events {
            inventory,
            count,
            seconds,
            json,
        } => {
            watch::events(
                &inventory,
                count,
                seconds.map(Duration::from_secs),
                json,
                &limit,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lab(LabCmd::Up {
            dir,
            addresses,
            port,
            agent_port,
            no_apply,
            no_fast_failover,
            topology,
            reset,
        }) => {
            use paddock_inventory::Topology;
            let topology = match topology.as_deref() {
                Some("replication") => Topology::Replication,
                Some("sentinel") => Topology::Sentinel,
                Some(_) => Topology::Cluster,
                None if reset => Topology::Cluster,
                None => lab::existing_topology(&dir).unwrap_or(Topology::Cluster),
            };
            let options = lab::LabOptions {
                dir,
                addresses,
                redis_port: port,
                agent_port,
                topology,
                apply: !no_apply,
                fast_failover: !no_fast_failover,
                progress: true,
                reset,
            };
            let up = lab::up(&options).await?;
            eprintln!(
                "lab: {} agent(s) started, inventory at {}",
                up.started_agents,
                up.inventory.display()
            );
            if let Some(report) = &up.apply {
                print_apply(report);
                let s = status::status(&up.inventory, &[]).await?;
                print_status(&s, false)?;
            }
            let first = options.addresses[0];
            let cluster_flag = if topology == Topology::Cluster {
                "-c "
            } else {
                ""
            };
            println!(
                "\nConnect:  REDISCLI_AUTH=\"$(cat {})\" redis-cli {cluster_flag}-h {first} -p {port}",
                up.password_file.display()
            );
            if topology == Topology::Sentinel {
                println!(
                    "Sentinel: REDISCLI_AUTH=\"$(cat {})\" redis-cli -h {first} -p 26379 SENTINEL GET-MASTER-ADDR-BY-NAME lab",
                    up.password_file.display()
                );
            }
            println!(
                "Status:   paddock lab status --dir {}",
                options.dir.display()
            );
            println!("Stop:     paddock lab down --dir {}", options.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lab(LabCmd::Status { dir, json }) => {
            let s = status::status(&lab::existing_inventory(&dir)?, &limit).await?;
            print_status(&s, json)?;
            Ok(if s.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Lab(LabCmd::Down { dir }) => {
            let down = lab::down(&dir).await?;
            println!(
                "lab stopped: {} instance(s) and {} agent(s){}",
                down.instances,
                down.agents,
                if down.leftover_redis > 0 {
                    format!(
                        ", plus {} leftover redis-server process(es)",
                        down.leftover_redis
                    )
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_outcomes(verb: &str, done: &[lifecycle::Outcome]) {
    if done.is_empty() {
        println!("{verb} nothing: the deployment has no instances on its agents.");
    }
    for o in done {
        println!("{verb} {} (now {})", o.label, o.state.as_str());
    }
}

fn inventory_is_cluster(path: &std::path::Path) -> bool {
    read_inventory(path)
        .is_ok_and(|i| i.deployment.topology == paddock_inventory::Topology::Cluster)
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

/// The error and its causes, each once: our errors' messages already
/// include their source, so a cause whose text is already there is skipped
/// (anyhow's `{:#}` would print it again).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let line = cause.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
    }
    text
}

fn read_inventory(path: &std::path::Path) -> anyhow::Result<paddock_inventory::Inventory> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    paddock_inventory::parse_bytes(&path.display().to_string(), &bytes)
        .map_err(|d| anyhow::anyhow!("{d}"))
}

fn print_apply(report: &apply::ApplyReport) {
    print!("{report}");
}

fn print_status(s: &status::Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        print!("{s}");
    }
    Ok(())
}
