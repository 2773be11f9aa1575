//! tasksync-bench: starts the release server, drives it like browsers do, and reports the
//! figures of the split-transport vs stateful comparison (issue 6) with a tasksync row.
//!
//! cargo build --release && cargo run --release --features bench --bin tasksync-bench -- [--quick] [--processes 1|2]

#[path = "tasksync-bench/http.rs"]
mod http;
#[path = "tasksync-bench/servers.rs"]
mod servers;
#[path = "tasksync-bench/stats.rs"]
mod stats;
#[path = "tasksync-bench/ws.rs"]
mod ws;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures_util::{StreamExt as _, stream};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{
    http::{Client, TURBO_ACCEPT},
    servers::Deployment,
    stats::{CpuMeter, CpuShare, Summary, cores, round},
};

const USAGE: &str = "\
usage: tasksync-bench [--quick] [--processes 1|2] [--users C] [--ramp-secs S] [--connections N]
                      [--subscribers S] [--posts P] [--rate R] [--tasks T] [--out PATH] [--server PATH]

Starts target/release/tasksync (build it first: cargo build --release), 1 process on SQLite or
2 on a fresh PostgreSQL database, and runs: 1 HTTP ramp, 2+3 WebSocket flood and hold,
4 fan-out across two processes (always two, on PostgreSQL), 5 client JavaScript lines.";

#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    processes: usize,
    users: usize,
    ramp_secs: u64,
    connections: usize,
    subscribers: usize,
    posts: usize,
    rate: f64,
    tasks: usize,
    out: PathBuf,
    server: PathBuf,
}

fn target_dir() -> PathBuf {
    // The benchmark runs from target/release/; the server binary and the results sit beside it.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn parse_args() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        quick,
        processes: 1,
        users: if quick { 10 } else { 50 },
        ramp_secs: if quick { 10 } else { 70 },
        connections: if quick { 100 } else { 500 },
        subscribers: if quick { 200 } else { 1000 },
        posts: if quick { 40 } else { 200 },
        rate: 20.0,
        tasks: 50,
        out: target_dir().join("bench").join("results.json"),
        server: target_dir().join("release").join("tasksync"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => {}
            "--processes" => o.processes = value()?.parse()?,
            "--users" => o.users = value()?.parse()?,
            "--ramp-secs" => o.ramp_secs = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--subscribers" => o.subscribers = value()?.parse()?,
            "--posts" => o.posts = value()?.parse()?,
            "--rate" => o.rate = value()?.parse()?,
            "--tasks" => o.tasks = value()?.parse()?,
            "--out" => o.out = value()?.into(),
            "--server" => o.server = value()?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !(1..=2).contains(&o.processes) {
        bail!("--processes is 1 or 2");
    }
    if o.users == 0 || o.connections == 0 || o.subscribers == 0 || o.posts == 0 || o.rate <= 0.0 {
        bail!("--users, --connections, --subscribers, --posts and --rate must be positive");
    }
    Ok(o)
}

/// Raises the open-file soft limit to the hard limit; the servers inherit it. Returns the limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tasksync-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool> {
    let opts = parse_args()?;
    if !opts.server.is_file() {
        bail!(
            "no server binary at {}: build it first with `cargo build --release`",
            opts.server.display()
        );
    }
    let nofile = raise_nofile();
    let log_dir = opts.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&log_dir)?;
    let mut connections = opts.connections;
    // Both ends of every held pair live on this machine: the generator needs 2 files a pair,
    // plus room for the HTTP clients.
    let fd_budget = (nofile as usize).saturating_sub(200) / 2;
    if connections > fd_budget {
        eprintln!(
            "open-file limit {nofile} allows {fd_budget} held pairs, not {connections}: running with {fd_budget}"
        );
        connections = fd_budget;
    }
    let opts = Options {
        connections,
        ..opts
    };
    println!(
        "tasksync-bench{}: {} core(s), open-file limit {nofile}, server {}",
        if opts.quick { " --quick" } else { "" },
        cores(),
        opts.server.display()
    );

    let started = Instant::now();
    let mut report = Report::default();
    let mut deployment = Deployment::start(&opts.server, opts.processes, &log_dir, "main").await?;
    report.deployment = deployment.label();
    println!("servers: {}", report.deployment);
    let outcome = main_phases(&opts, &deployment, &mut report).await;
    deployment.stop().await;
    outcome?;

    // Fan-out is across two processes by definition; the single-process run starts a pair.
    let mut pair = Deployment::start(&opts.server, 2, &log_dir, "fanout").await?;
    let outcome = fanout(&opts, &pair).await;
    pair.stop().await;
    report.fanout = Some(outcome?);

    report.js = Some(client_js_lines()?);
    report.total_secs = started.elapsed().as_secs_f64();
    report.print(&opts);
    let json = report.json(&opts);
    std::fs::write(&opts.out, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("\nresults: {}", opts.out.display());
    let problems = report.problems();
    for problem in &problems {
        eprintln!("FAILED: {problem}");
    }
    Ok(problems.is_empty())
}

async fn main_phases(opts: &Options, deployment: &Deployment, report: &mut Report) -> Result<()> {
    let room = seed_room(deployment.servers[0].addr, opts.tasks).await?;
    report.rss_idle_kib = deployment.rss_kib();
    report.http = Some(http_ramp(opts, deployment, &room).await?);
    let needed = opts.connections.max(opts.subscribers);
    let cookies = sign_in_many(deployment, needed, "holder").await?;
    report.flood = Some(flood(opts, deployment, &room, &cookies).await?);
    Ok(())
}

struct Room {
    id: i64,
    signed_stream: String,
}

async fn sign_in(addr: std::net::SocketAddr, name: &str) -> Result<Client> {
    let mut client = Client::new(addr);
    let page = client.get("/session/new").await?;
    let token = http::csrf_token(&page.body).context("sign-in page has a CSRF token")?;
    let res = client
        .post(
            "/session",
            &[("authenticity_token", &token), ("name", name)],
            None,
        )
        .await?;
    if res.status != 303 {
        bail!("sign in as {name}: {} {}", res.status, res.body);
    }
    Ok(client)
}

/// Signs in `n` people (cookie sessions: any process with the shared secret accepts them).
async fn sign_in_many(deployment: &Deployment, n: usize, prefix: &str) -> Result<Vec<String>> {
    let progress = bar(n as u64, "sign in");
    let addrs: Vec<_> = deployment.servers.iter().map(|s| s.addr).collect();
    let results: Vec<Result<String>> = stream::iter(0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let progress = progress.clone();
            async move {
                let client = sign_in(addr, &format!("{prefix} {i}")).await?;
                progress.inc(1);
                Ok(client.cookie_header())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    progress.finish_and_clear();
    results.into_iter().collect()
}

/// A room with `tasks` tasks, made through the forms as a person would.
async fn seed_room(addr: std::net::SocketAddr, tasks: usize) -> Result<Room> {
    let mut client = sign_in(addr, "Seeder").await?;
    let page = client.get("/rooms").await?;
    let token = http::csrf_token(&page.body).context("rooms page has a CSRF token")?;
    let res = client
        .post(
            "/rooms",
            &[("authenticity_token", &token), ("room[name]", "Benchmark")],
            None,
        )
        .await?;
    let id: i64 = res
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix("/rooms/"))
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("create room: {} {}", res.status, res.body))?;
    for i in 0..tasks {
        let title = format!("Seeded task {i}");
        let res = client
            .post(
                &format!("/rooms/{id}/tasks"),
                &[
                    ("authenticity_token", &token),
                    ("task[title]", title.as_str()),
                ],
                Some(TURBO_ACCEPT),
            )
            .await?;
        if res.status != 200 {
            bail!("seed task {i}: {} {}", res.status, res.body);
        }
    }
    let page = client.get(&format!("/rooms/{id}")).await?;
    let signed_stream = http::attribute_after(&page.body, "signed-stream-name=\"")
        .context("room page has a signed stream name")?;
    Ok(Room { id, signed_stream })
}

// ---------------------------------------------------------------------------------------------
// Phase 1: HTTP ramp

struct HttpResult {
    users: usize,
    window_secs: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    all: Summary,
    page: Summary,
    create: Summary,
    delete: Summary,
    cpu: CpuShare,
}

#[derive(Default)]
struct UserLog {
    page: Vec<Duration>,
    create: Vec<Duration>,
    delete: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl UserLog {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// One timed request; `None` when the window closed before it finished (not counted).
async fn timed<T>(
    deadline: tokio::time::Instant,
    request: impl Future<Output = Result<T>>,
) -> Option<(Result<T>, Duration)> {
    let start = Instant::now();
    let result = tokio::time::timeout_at(deadline, request).await.ok()?;
    Some((result, start.elapsed()))
}

async fn virtual_user(
    mut client: Client,
    room: i64,
    user: usize,
    deadline: tokio::time::Instant,
    done: Arc<AtomicU64>,
) -> UserLog {
    let mut log = UserLog::default();
    let room_path = format!("/rooms/{room}");
    let tasks_path = format!("/rooms/{room}/tasks");
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline {
        n += 1;
        let Some((page, took)) = timed(deadline, client.get(&room_path)).await else {
            break;
        };
        let token = match page {
            Ok(res) if res.status == 200 => {
                log.page.push(took);
                done.fetch_add(1, Ordering::Relaxed);
                http::csrf_token(&res.body)
            }
            Ok(res) => {
                log.error(format!("GET {room_path}: {}", res.status));
                None
            }
            Err(e) => {
                log.error(format!("GET {room_path}: {e:#}"));
                None
            }
        };
        let Some(token) = token else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let title = format!("User {user} task {n}");
        let fields = [
            ("authenticity_token", token.as_str()),
            ("task[title]", title.as_str()),
        ];
        let Some((created, took)) = timed(
            deadline,
            client.post(&tasks_path, &fields, Some(TURBO_ACCEPT)),
        )
        .await
        else {
            break;
        };
        let task = match created {
            Ok(res) if res.status == 200 => {
                log.create.push(took);
                done.fetch_add(1, Ordering::Relaxed);
                http::task_id(&res.body)
            }
            Ok(res) => {
                log.error(format!("POST {tasks_path}: {}", res.status));
                None
            }
            Err(e) => {
                log.error(format!("POST {tasks_path}: {e:#}"));
                None
            }
        };
        let Some(task) = task else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let path = format!("{tasks_path}/{task}");
        let fields = [
            ("authenticity_token", token.as_str()),
            ("_method", "delete"),
        ];
        let Some((deleted, took)) =
            timed(deadline, client.post(&path, &fields, Some(TURBO_ACCEPT))).await
        else {
            break;
        };
        match deleted {
            Ok(res) if res.status == 200 => {
                log.delete.push(took);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(res) => log.error(format!("DELETE {path}: {}", res.status)),
            Err(e) => log.error(format!("DELETE {path}: {e:#}")),
        }
    }
    log
}

async fn http_ramp(opts: &Options, deployment: &Deployment, room: &Room) -> Result<HttpResult> {
    let cookies = sign_in_many(deployment, opts.users, "user").await?;
    let window = Duration::from_secs(opts.ramp_secs);
    let done = Arc::new(AtomicU64::new(0));
    let meter = CpuMeter::start(deployment.cpu_time());
    let start = tokio::time::Instant::now();
    let deadline = start + window;
    let mut users = JoinSet::new();
    for (i, cookie) in cookies.iter().enumerate() {
        let addr = deployment.servers[i % deployment.servers.len()].addr;
        let client = Client::with_cookie(addr, cookie);
        // User i joins at i/C of the window, so the last one arrives just before it closes.
        let begin = start + window.mul_f64(i as f64 / opts.users as f64);
        let (done, room) = (done.clone(), room.id);
        users.spawn(async move {
            tokio::time::sleep_until(begin).await;
            virtual_user(client, room, i, deadline, done).await
        });
    }
    let progress = bar(opts.ramp_secs, "1 HTTP ramp");
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = start.elapsed().as_secs_f64();
        progress.set_position(elapsed as u64);
        let active = ((elapsed / window.as_secs_f64()) * opts.users as f64).ceil() as usize;
        progress.set_message(format!(
            "s, {} users, {} requests",
            active.min(opts.users),
            done.load(Ordering::Relaxed)
        ));
    }
    let mut merged = UserLog::default();
    while let Some(log) = users.join_next().await {
        let mut log = log?;
        merged.page.append(&mut log.page);
        merged.create.append(&mut log.create);
        merged.delete.append(&mut log.delete);
        merged.errors += log.errors;
        if merged.first_error.is_none() {
            merged.first_error = log.first_error;
        }
    }
    let cpu = meter.stop(deployment.cpu_time());
    progress.finish_and_clear();
    let mut all: Vec<Duration> = merged
        .page
        .iter()
        .chain(&merged.create)
        .chain(&merged.delete)
        .copied()
        .collect();
    let result = HttpResult {
        users: opts.users,
        window_secs: opts.ramp_secs,
        requests: all.len() as u64,
        errors: merged.errors,
        first_error: merged.first_error,
        all: Summary::of(&mut all),
        page: Summary::of(&mut merged.page),
        create: Summary::of(&mut merged.create),
        delete: Summary::of(&mut merged.delete),
        cpu,
    };
    println!(
        "1 HTTP ramp: {} requests in {} s ({:.0}/s), {} errors; {}",
        result.requests,
        result.window_secs,
        result.requests as f64 / result.window_secs as f64,
        result.errors,
        result.all.line()
    );
    println!("  {}", result.cpu.line());
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Phases 2 and 3: WebSocket flood, then hold the pairs and read the servers' memory

struct FloodResult {
    pairs: usize,
    cable: Summary,
    cable_failures: usize,
    presence: Summary,
    presence_failures: usize,
    first_error: Option<String>,
    rss_before_kib: u64,
    rss_held_kib: u64,
    rss_after_kib: u64,
    cable_cpu: CpuShare,
    presence_cpu: CpuShare,
}

/// Opens `n` sockets at the same moment; returns the open ones, the handshake times of the
/// successes, and the failures.
async fn burst<F, Fut>(
    n: usize,
    name: &str,
    connect: F,
) -> (Vec<ws::Socket>, Vec<Duration>, Vec<String>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<ws::Socket>> + Send + 'static,
{
    let (go, ready) = tokio::sync::watch::channel(false);
    let progress = bar(n as u64, name);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let mut ready = ready.clone();
        let attempt = connect(i);
        let progress = progress.clone();
        tasks.spawn(async move {
            let _ = ready.wait_for(|go| *go).await;
            let start = Instant::now();
            let result = tokio::time::timeout(ws::CONNECT_TIMEOUT, attempt).await;
            let took = start.elapsed();
            progress.inc(1);
            match result {
                Ok(Ok(socket)) => Ok((socket, took)),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no answer within {:?}", ws::CONNECT_TIMEOUT)),
            }
        });
    }
    // Let every task park on the signal so the connects really start together.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = go.send(true);
    let (mut sockets, mut times, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((socket, took))) => {
                sockets.push(socket);
                times.push(took);
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    progress.finish_and_clear();
    (sockets, times, errors)
}

async fn flood(
    opts: &Options,
    deployment: &Deployment,
    room: &Room,
    cookies: &[String],
) -> Result<FloodResult> {
    let n = opts.connections;
    let origins: Vec<String> = deployment
        .servers
        .iter()
        .map(|s| s.origin.clone())
        .collect();
    let identifier = ws::identifier(&room.signed_stream);
    // Let the HTTP phase's connections wind down so "before" is the idle server.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = deployment.rss_kib();

    let meter = CpuMeter::start(deployment.cpu_time());
    let (cables, mut cable_times, cable_errors) = burst(n, "2 /cable", |i| {
        let origin = origins[i % origins.len()].clone();
        let cookie = cookies[i % cookies.len()].clone();
        let identifier = identifier.clone();
        async move { ws::cable(&origin, &cookie, &identifier).await }
    })
    .await;
    let cable_cpu = meter.stop(deployment.cpu_time());
    let mut held: Vec<_> = cables.into_iter().map(ws::hold).collect();

    let meter = CpuMeter::start(deployment.cpu_time());
    let room_id = room.id;
    let (presences, mut presence_times, presence_errors) = burst(n, "2 presence", |i| {
        let origin = origins[i % origins.len()].clone();
        let cookie = cookies[i % cookies.len()].clone();
        async move { ws::presence(&origin, &cookie, room_id).await }
    })
    .await;
    let presence_cpu = meter.stop(deployment.cpu_time());
    let pairs = held.len().min(presences.len());
    held.extend(presences.into_iter().map(ws::hold));

    // Presence batches its join diffs every 100 ms; give the storm time to settle before
    // reading memory.
    let progress = bar(3, "3 hold");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress.inc(1);
    }
    let rss_held_kib = deployment.rss_kib();
    progress.finish_and_clear();
    for socket in &held {
        socket.abort();
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = deployment.rss_kib();

    let first_error = cable_errors.first().or(presence_errors.first()).cloned();
    let result = FloodResult {
        pairs,
        cable: Summary::of(&mut cable_times),
        cable_failures: cable_errors.len(),
        presence: Summary::of(&mut presence_times),
        presence_failures: presence_errors.len(),
        first_error,
        rss_before_kib,
        rss_held_kib,
        rss_after_kib,
        cable_cpu,
        presence_cpu,
    };
    println!(
        "2 WebSocket flood of {n}: /cable to confirm_subscription {}, {} failed",
        result.cable.line(),
        result.cable_failures
    );
    println!("  {}", result.cable_cpu.line());
    println!(
        "  presence to presence_state {}, {} failed",
        result.presence.line(),
        result.presence_failures
    );
    println!("  {}", result.presence_cpu.line());
    if let Some(e) = &result.first_error {
        println!("  first failure: {e}");
    }
    println!(
        "3 hold {} pairs: server RSS {:.1} MB before, {:.1} MB held ({:.1} KB per pair), {:.1} MB after closing",
        result.pairs,
        mb(result.rss_before_kib),
        mb(result.rss_held_kib),
        result.kb_per_pair(),
        mb(result.rss_after_kib)
    );
    Ok(result)
}

impl FloodResult {
    fn kb_per_pair(&self) -> f64 {
        self.rss_held_kib.saturating_sub(self.rss_before_kib) as f64 / self.pairs.max(1) as f64
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Phase 4: fan-out across two processes

struct FanoutResult {
    subscribers: usize,
    subscribe_failures: usize,
    posts: usize,
    post_errors: usize,
    rate: f64,
    expected: usize,
    delivered: usize,
    latency: Summary,
    post_latency: Summary,
    first_error: Option<String>,
    cpu: CpuShare,
}

const MARKER: &str = "fanout-";

async fn fanout(opts: &Options, deployment: &Deployment) -> Result<FanoutResult> {
    let room = seed_room(deployment.servers[0].addr, opts.tasks).await?;
    let cookies = sign_in_many(deployment, opts.subscribers, "subscriber").await?;
    let origins: Vec<String> = deployment
        .servers
        .iter()
        .map(|s| s.origin.clone())
        .collect();
    let identifier = ws::identifier(&room.signed_stream);

    let progress = bar(opts.subscribers as u64, "4 subscribe");
    let connected: Vec<Result<ws::Socket>> = stream::iter(0..opts.subscribers)
        .map(|i| {
            let origin = origins[i % origins.len()].clone();
            let (cookie, identifier, progress) =
                (cookies[i].clone(), identifier.clone(), progress.clone());
            async move {
                let socket = tokio::time::timeout(
                    ws::CONNECT_TIMEOUT,
                    ws::cable(&origin, &cookie, &identifier),
                )
                .await
                .context("subscribe timed out")?;
                progress.inc(1);
                socket
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    progress.finish_and_clear();
    let mut first_error = None;
    let mut sockets = Vec::new();
    for result in connected {
        match result {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                first_error.get_or_insert(format!("subscribe: {e:#}"));
            }
        }
    }
    let subscribe_failures = opts.subscribers - sockets.len();

    // Posters: one signed-in person on each process, a few keep-alive connections each.
    let mut posters = Vec::new();
    for server in &deployment.servers {
        let mut client = sign_in(server.addr, "Poster").await?;
        let page = client.get(&format!("/rooms/{}", room.id)).await?;
        let token = http::csrf_token(&page.body).context("room page has a CSRF token")?;
        posters.push((client.cookie_header(), token, server.addr));
    }
    let pools: Vec<Arc<Mutex<Vec<Client>>>> = posters
        .iter()
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; opts.posts]));
    let schedule = Duration::from_secs_f64(opts.posts as f64 / opts.rate);
    let until = tokio::time::Instant::now() + schedule + Duration::from_secs(15);
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(ws::receive_posts(socket, MARKER, opts.posts, until)))
        .collect();

    let meter = CpuMeter::start(deployment.cpu_time());
    let progress = bar(opts.posts as u64, "4 fan-out");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut posts = JoinSet::new();
    for k in 0..opts.posts {
        ticker.tick().await;
        // Alternate processes so half of every subscriber's deliveries cross between them.
        let which = k % posters.len();
        let (cookie, token, addr) = posters[which].clone();
        let pool = pools[which].clone();
        let sent_at = sent_at.clone();
        let path = format!("/rooms/{}/tasks", room.id);
        let progress = progress.clone();
        posts.spawn(async move {
            let popped = pool.lock().expect("pool").pop();
            let mut client = popped.unwrap_or_else(|| Client::with_cookie(addr, &cookie));
            let title = format!("{MARKER}{k} post");
            let fields = [
                ("authenticity_token", token.as_str()),
                ("task[title]", title.as_str()),
            ];
            let start = Instant::now();
            sent_at.lock().expect("sent_at")[k] = Some(start);
            let result = client.post(&path, &fields, Some(TURBO_ACCEPT)).await;
            let took = start.elapsed();
            pool.lock().expect("pool").push(client);
            progress.inc(1);
            match result {
                Ok(res) if res.status == 200 => Ok(took),
                Ok(res) => Err(format!("post {k}: {}", res.status)),
                Err(e) => Err(format!("post {k}: {e:#}")),
            }
        });
    }
    let mut post_times = Vec::new();
    let mut failed_posts = vec![false; opts.posts];
    let mut post_errors = 0;
    while let Some(joined) = posts.join_next().await {
        match joined? {
            Ok(took) => post_times.push(took),
            Err(e) => {
                post_errors += 1;
                if let Some(k) = e
                    .strip_prefix("post ")
                    .and_then(|r| r.split(':').next())
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    failed_posts[k] = true;
                }
                first_error.get_or_insert(e);
            }
        }
    }
    progress.set_message("waiting for deliveries");
    let subscribers = receivers.len();
    let mut latencies = Vec::new();
    let sent_at = sent_at.lock().expect("sent_at").clone();
    for receiver in receivers {
        let seen = receiver.await?;
        for (k, arrived) in seen.into_iter().enumerate() {
            if let (Some(arrived), Some(sent)) = (arrived, sent_at[k])
                && !failed_posts[k]
            {
                latencies.push(arrived.saturating_duration_since(sent));
            }
        }
    }
    let cpu = meter.stop(deployment.cpu_time());
    progress.finish_and_clear();
    let good_posts = opts.posts - post_errors;
    let result = FanoutResult {
        subscribers,
        subscribe_failures,
        posts: opts.posts,
        post_errors,
        rate: opts.rate,
        expected: subscribers * good_posts,
        delivered: latencies.len(),
        latency: Summary::of(&mut latencies),
        post_latency: Summary::of(&mut post_times),
        first_error,
        cpu,
    };
    println!(
        "4 fan-out: {} subscribers over 2 processes, {} posts at {}/s: {} of {} delivered ({} lost); {}",
        result.subscribers,
        result.posts,
        result.rate,
        result.delivered,
        result.expected,
        result.lost(),
        result.latency.line()
    );
    println!("  POST itself: {}", result.post_latency.line());
    println!("  {}", result.cpu.line());
    if let Some(e) = &result.first_error {
        println!("  first failure: {e}");
    }
    Ok(result)
}

impl FanoutResult {
    fn lost(&self) -> usize {
        self.expected - self.delivered
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 5: client JavaScript we wrote

struct JsLines {
    files: Vec<(String, usize)>,
    total: usize,
}

fn client_js_lines() -> Result<JsLines> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js" || e == "mjs") {
            let source = std::fs::read_to_string(&path)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            files.push((format!("static/{name}"), code_lines(&source)));
        }
    }
    files.sort();
    let total = files.iter().map(|(_, n)| n).sum();
    println!("5 client JavaScript we wrote: {total} lines ({files:?})");
    Ok(JsLines { files, total })
}

/// Lines holding code: not blank, not only a `//` comment, not inside a `/* */` block.
fn code_lines(source: &str) -> usize {
    let mut in_block = false;
    source
        .lines()
        .filter(|line| {
            let line = line.trim();
            if in_block {
                if let Some(end) = line.find("*/") {
                    in_block = false;
                    return !line[end + 2..].trim().is_empty();
                }
                return false;
            }
            if line.starts_with("/*") {
                match line.find("*/") {
                    Some(end) => return !line[end + 2..].trim().is_empty(),
                    None => {
                        in_block = true;
                        return false;
                    }
                }
            }
            !line.is_empty() && !line.starts_with("//")
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// The report

#[derive(Default)]
struct Report {
    deployment: String,
    rss_idle_kib: u64,
    http: Option<HttpResult>,
    flood: Option<FloodResult>,
    fanout: Option<FanoutResult>,
    js: Option<JsLines>,
    total_secs: f64,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

impl Report {
    fn print(&self, opts: &Options) {
        let (Some(h), Some(f), Some(o), Some(js)) =
            (&self.http, &self.flood, &self.fanout, &self.js)
        else {
            return;
        };
        println!(
            "\n| model | HTTP p50 | WS handshake p50 | requests in {} s | client JS written | memory at {} conns |",
            h.window_secs, f.pairs
        );
        println!("|---|---|---|---|---|---|");
        println!("| stateful (Phoenix LiveView) | 130 ms | 30 ms | ~3,200 | 0 lines | ~70 MB |");
        println!(
            "| split-transport (Rails Hotwire) | 1,484 ms | 418 ms | ~640 | ~200 lines | ~70 MB |"
        );
        println!(
            "| tasksync ({}) | {:.2} ms | {:.2} ms | {} | {} lines | {:.1} MB |",
            self.deployment,
            h.all.p50,
            f.cable.p50,
            h.requests,
            js.total,
            mb(f.rss_held_kib)
        );
        if opts.quick {
            println!(
                "\n(--quick: smaller sizes and a shorter window; not comparable with the targets)"
            );
        }
        println!("\nagainst the issue's targets:");
        let full = !opts.quick;
        let rows = [
            (
                format!("HTTP p50 {:.2} ms <= 5 ms", h.all.p50),
                h.all.p50 <= 5.0,
            ),
            (
                format!("HTTP p99 {:.2} ms <= 25 ms", h.all.p99),
                h.all.p99 <= 25.0,
            ),
            (
                format!("requests in {} s: {} >= 300,000", h.window_secs, h.requests),
                h.requests >= 300_000,
            ),
            (
                format!(
                    "cable handshake p50 {:.2} / p99 {:.2} ms <= 5 / 30 ms, {} failures",
                    f.cable.p50, f.cable.p99, f.cable_failures
                ),
                f.cable.p50 <= 5.0 && f.cable.p99 <= 30.0 && f.cable_failures == 0,
            ),
            (
                format!(
                    "presence handshake p50 {:.2} / p99 {:.2} ms <= 5 / 30 ms, {} failures",
                    f.presence.p50, f.presence.p99, f.presence_failures
                ),
                f.presence.p50 <= 5.0 && f.presence.p99 <= 30.0 && f.presence_failures == 0,
            ),
            (
                format!(
                    "RSS at {} held pairs {:.1} MB <= 25 MB",
                    f.pairs,
                    mb(f.rss_held_kib)
                ),
                mb(f.rss_held_kib) <= 25.0,
            ),
            (
                format!(
                    "fan-out p99 {:.2} ms <= 50 ms to {} subscribers at {}/s, {} lost",
                    o.latency.p99,
                    o.subscribers,
                    o.rate,
                    o.lost()
                ),
                o.latency.p99 <= 50.0 && o.lost() == 0,
            ),
            (
                format!("client JavaScript {} lines <= 60", js.total),
                js.total <= 60,
            ),
        ];
        for (what, met) in rows {
            let mark = if full { verdict(met) } else { "-" };
            println!("  [{mark:>6}] {what}");
        }
        println!(
            "  not run here: 10,000 held pairs (<= 16 KB each) and fan-out to 10,000 subscribers at 5/s"
        );
        println!("\ntotal time {:.1} s", self.total_secs);
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(h) = &self.http
            && h.errors > 0
        {
            problems.push(format!(
                "{} HTTP errors (first: {})",
                h.errors,
                h.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(f) = &self.flood
            && f.cable_failures + f.presence_failures > 0
        {
            problems.push(format!(
                "{} cable and {} presence connects failed (first: {})",
                f.cable_failures,
                f.presence_failures,
                f.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(o) = &self.fanout
            && (o.lost() > 0 || o.post_errors > 0 || o.subscribe_failures > 0)
        {
            problems.push(format!(
                "fan-out: {} lost deliveries, {} failed posts, {} failed subscriptions (first: {})",
                o.lost(),
                o.post_errors,
                o.subscribe_failures,
                o.first_error.as_deref().unwrap_or("-")
            ));
        }
        problems
    }

    fn json(&self, opts: &Options) -> Value {
        let machine = json!({
            "cores": cores(),
            "cpu": cpu_model(),
            "memory_kib": mem_total_kib(),
        });
        json!({
            "quick": opts.quick,
            "deployment": self.deployment,
            "machine": machine,
            "options": {
                "processes": opts.processes,
                "users": opts.users,
                "ramp_secs": opts.ramp_secs,
                "connections": opts.connections,
                "subscribers": opts.subscribers,
                "posts": opts.posts,
                "rate_per_sec": opts.rate,
                "tasks": opts.tasks,
            },
            "rss_idle_kib": self.rss_idle_kib,
            "http": self.http.as_ref().map(|h| json!({
                "users": h.users,
                "window_secs": h.window_secs,
                "requests": h.requests,
                "errors": h.errors,
                "all": h.all.json(),
                "get_room": h.page.json(),
                "create_task": h.create.json(),
                "delete_task": h.delete.json(),
                "cpu": h.cpu.json(),
            })),
            "flood": self.flood.as_ref().map(|f| json!({
                "connections": f.pairs.max(f.cable.count),
                "cable_handshake": f.cable.json(),
                "cable_failures": f.cable_failures,
                "cable_cpu": f.cable_cpu.json(),
                "presence_handshake": f.presence.json(),
                "presence_failures": f.presence_failures,
                "presence_cpu": f.presence_cpu.json(),
            })),
            "hold": self.flood.as_ref().map(|f| json!({
                "pairs": f.pairs,
                "rss_before_kib": f.rss_before_kib,
                "rss_held_kib": f.rss_held_kib,
                "rss_after_kib": f.rss_after_kib,
                "kb_per_pair": round(f.kb_per_pair()),
            })),
            "fanout": self.fanout.as_ref().map(|o| json!({
                "processes": 2,
                "subscribers": o.subscribers,
                "subscribe_failures": o.subscribe_failures,
                "posts": o.posts,
                "rate_per_sec": o.rate,
                "post_errors": o.post_errors,
                "expected_deliveries": o.expected,
                "delivered": o.delivered,
                "lost": o.lost(),
                "delivery_latency": o.latency.json(),
                "post_latency": o.post_latency.json(),
                "cpu": o.cpu.json(),
            })),
            "client_js": self.js.as_ref().map(|js| json!({
                "total_lines": js.total,
                "files": js.files.iter().map(|(f, n)| json!({"file": f, "lines": n})).collect::<Vec<_>>(),
            })),
            "total_secs": round(self.total_secs),
        })
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::code_lines;

    #[test]
    fn counts_code_not_comments_or_blanks() {
        let js = "// header\n\n/* block\n still */\nconst a = 1; // trailing\n  /* one */ let b\n";
        assert_eq!(code_lines(js), 2);
    }
}
