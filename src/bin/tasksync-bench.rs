//! tasksync-bench: starts the release server, drives it like browsers do, and reports the
//! figures of the split-transport vs stateful comparison (issue 6) with a tasksync row.
//!
//! cargo build --release && cargo run --release --features bench --bin tasksync-bench -- [--quick] [--processes 1|2]

#[path = "tasksync-bench/chart.rs"]
mod chart;
#[path = "tasksync-bench/floor.rs"]
mod floor;
#[path = "tasksync-bench/hold.rs"]
mod hold;
#[path = "tasksync-bench/http.rs"]
mod http;
#[path = "tasksync-bench/pgbench.rs"]
mod pgbench;
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
usage: tasksync-bench [--quick | --large] [--processes 1|2] [--phases http,ws,fanout] [--pgbench]
                      [--users C] [--ramp-secs S] [--connections N] [--hold N] [--room-size R]
                      [--wave W] [--subscribers S] [--posts P] [--rate R] [--tasks T]
                      [--pgbench-secs S] [--accept-encoding VALUE] [--out PATH] [--chart PATH]
                      [--chart-from RESULTS] [--server PATH]

Starts target/release/tasksync (build it first: cargo build --release), 1 process on SQLite or
2 on a fresh PostgreSQL database, and runs: 1 HTTP ramp, 2+3 WebSocket flood and hold,
4 fan-out across two processes (always two, on PostgreSQL), 5 client JavaScript lines.

  --quick        small sizes, under a minute (the CI smoke test)
  --large        hold 10,000 pairs and fan out to 10,000 subscribers at 5 posts/s (2 processes)
  --phases LIST  which of http, ws (flood and hold), fanout to run; default all
  --pgbench      also run PostgreSQL's pgbench on the statements of a task POST and DELETE, with
                 --users clients, for --pgbench-secs (needs --processes 2: the PostgreSQL run)
  --hold N       pairs held in phase 3: the flood's, then more opened in waves of --wave by
                 worker processes, in rooms of --room-size people
  --accept-encoding VALUE  what the HTTP ramp's requests say they take (default Chromium's,
                 gzip, deflate, br, zstd; none sends no Accept-Encoding: nothing compressed)
  --chart PATH   the SVG latency chart (default: latency.svg beside --out)
  --chart-from RESULTS  only draw the chart again (to --chart) from a results JSON file";

#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    large: bool,
    processes: usize,
    http: bool,
    ws: bool,
    fanout: bool,
    pgbench: bool,
    pgbench_secs: u64,
    users: usize,
    ramp_secs: u64,
    connections: usize,
    hold: usize,
    room_size: usize,
    wave: usize,
    subscribers: usize,
    posts: usize,
    rate: f64,
    tasks: usize,
    /// The HTTP ramp's `Accept-Encoding`; `None` sends none.
    accept_encoding: Option<String>,
    out: PathBuf,
    chart: Option<PathBuf>,
    chart_from: Option<PathBuf>,
    server: PathBuf,
}

impl Options {
    fn chart_path(&self) -> PathBuf {
        self.chart
            .clone()
            .unwrap_or_else(|| self.out.with_file_name("latency.svg"))
    }
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
    let large = args.iter().any(|a| a == "--large");
    if quick && large {
        bail!("--quick and --large don't go together\n{USAGE}");
    }
    let mut o = Options {
        quick,
        large,
        // One process cannot hold 20,000 sockets under the usual open-file limit of 20,000.
        processes: if large { 2 } else { 1 },
        http: true,
        ws: true,
        fanout: true,
        pgbench: false,
        pgbench_secs: if quick { 5 } else { 15 },
        users: if quick { 10 } else { 50 },
        ramp_secs: if quick { 10 } else { 70 },
        connections: if quick { 100 } else { 500 },
        hold: if quick {
            200
        } else if large {
            10_000
        } else {
            500
        },
        room_size: 50,
        wave: 64,
        subscribers: if quick {
            200
        } else if large {
            10_000
        } else {
            1000
        },
        posts: if quick {
            40
        } else if large {
            50
        } else {
            200
        },
        rate: if large { 5.0 } else { 20.0 },
        tasks: 50,
        accept_encoding: Some(http::BROWSER_ACCEPT_ENCODING.to_owned()),
        out: target_dir().join("bench").join("results.json"),
        chart: None,
        chart_from: None,
        server: target_dir().join("release").join("tasksync"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" | "--large" => {}
            "--pgbench" => o.pgbench = true,
            "--phases" => {
                let list = value()?.clone();
                (o.http, o.ws, o.fanout) = (false, false, false);
                for phase in list.split(',').map(str::trim) {
                    match phase {
                        "http" => o.http = true,
                        "ws" => o.ws = true,
                        "fanout" => o.fanout = true,
                        other => bail!("unknown phase {other}: http, ws or fanout"),
                    }
                }
            }
            "--processes" => o.processes = value()?.parse()?,
            "--pgbench-secs" => o.pgbench_secs = value()?.parse()?,
            "--users" => o.users = value()?.parse()?,
            "--ramp-secs" => o.ramp_secs = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--hold" => o.hold = value()?.parse()?,
            "--room-size" => o.room_size = value()?.parse()?,
            "--wave" => o.wave = value()?.parse()?,
            "--subscribers" => o.subscribers = value()?.parse()?,
            "--posts" => o.posts = value()?.parse()?,
            "--rate" => o.rate = value()?.parse()?,
            "--tasks" => o.tasks = value()?.parse()?,
            "--accept-encoding" => {
                let value = value()?;
                o.accept_encoding = (value != "none").then(|| value.clone());
            }
            "--out" => o.out = value()?.into(),
            "--chart" => o.chart = Some(value()?.into()),
            "--chart-from" => o.chart_from = Some(value()?.into()),
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
    if o.users == 0
        || o.connections == 0
        || o.subscribers == 0
        || o.posts == 0
        || o.rate <= 0.0
        || o.room_size == 0
        || o.wave == 0
        || o.pgbench_secs == 0
    {
        bail!(
            "--users, --connections, --subscribers, --posts, --rate, --room-size, --wave and \
             --pgbench-secs must be positive"
        );
    }
    if o.hold < o.connections {
        eprintln!(
            "--hold {} is below --connections {}: holding the flood's {} pairs",
            o.hold, o.connections, o.connections
        );
        o.hold = o.connections;
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

fn main() -> ExitCode {
    // The same binary runs as its own helper processes.
    let role = std::env::args().nth(1);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if role.as_deref() == Some(floor::SERVER_FLAG) {
        // One worker per core, as tasksync has, whatever the environment asks of the
        // generator's runtime (tokio reads `TOKIO_WORKER_THREADS`; see the README).
        runtime.worker_threads(cores());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tasksync-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match role.as_deref() {
            Some(floor::SERVER_FLAG) => ("floor server", floor::server().await.map(|()| true)),
            Some(hold::WORKER_FLAG) => ("hold worker", hold::worker().await.map(|()| true)),
            _ => ("", run().await),
        }
    });
    match outcome {
        (_, Ok(true)) => ExitCode::SUCCESS,
        (_, Ok(false)) => ExitCode::FAILURE,
        (role, Err(e)) => {
            eprintln!(
                "tasksync-bench{}{role}: {e:#}",
                if role.is_empty() { "" } else { " " }
            );
            ExitCode::FAILURE
        }
    }
}

/// Caps the sizes to what the open-file limit allows, saying so.
fn fit_to_open_files(mut opts: Options, nofile: u64) -> Options {
    let nofile = nofile as usize;
    let cap = |what: &str, wanted: &mut usize, allowed: usize| {
        if *wanted > allowed {
            eprintln!(
                "open-file limit {nofile} allows {allowed} {what}, not {wanted}: running with {allowed}"
            );
            *wanted = allowed;
        }
    };
    // The flood's pairs are held by this process: 2 files a pair, plus room for HTTP clients.
    cap(
        "flood pairs",
        &mut opts.connections,
        nofile.saturating_sub(200) / 2,
    );
    // Every server process holds its share of the held sockets (the workers spread theirs).
    cap(
        "held pairs on this many processes",
        &mut opts.hold,
        opts.processes * nofile.saturating_sub(300) / 2,
    );
    opts.hold = opts.hold.max(opts.connections);
    // The fan-out subscribers are this process's sockets.
    cap(
        "fan-out subscribers",
        &mut opts.subscribers,
        nofile.saturating_sub(200),
    );
    opts
}

async fn run() -> Result<bool> {
    let opts = parse_args()?;
    if let Some(results) = &opts.chart_from {
        let path = opts.chart_path();
        chart::render_from_results(results, &path)?;
        println!("chart: {}", path.display());
        return Ok(true);
    }
    if !opts.server.is_file() {
        bail!(
            "no server binary at {}: build it first with `cargo build --release`",
            opts.server.display()
        );
    }
    // Raised before any server starts, so the servers and the hold workers inherit it.
    let nofile = raise_nofile();
    let log_dir = opts.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&log_dir)?;
    let opts = fit_to_open_files(opts, nofile);
    println!(
        "tasksync-bench{}: {} core(s), open-file limit {nofile}, server {}",
        if opts.quick {
            " --quick"
        } else if opts.large {
            " --large"
        } else {
            ""
        },
        cores(),
        opts.server.display()
    );

    let started = Instant::now();
    let mut report = Report::default();
    let mut people = People::default();
    if opts.http || opts.ws || opts.pgbench {
        let mut deployment =
            Deployment::start(&opts.server, opts.processes, &log_dir, "main").await?;
        report.deployment = deployment.label();
        println!("servers: {}", report.deployment);
        let outcome = main_phases(&opts, &deployment, &mut report, &mut people).await;
        deployment.stop().await;
        outcome?;
    }

    if opts.fanout {
        // Fan-out is across two processes by definition; the single-process run starts a pair.
        let mut pair = Deployment::start(&opts.server, 2, &log_dir, "fanout").await?;
        let outcome = fanout(&opts, &pair, &mut people).await;
        pair.stop().await;
        report.fanout = Some(outcome?);
    }

    report.js = Some(client_js_lines()?);
    report.total_secs = started.elapsed().as_secs_f64();
    report.print(&opts);
    let chart_path = opts.chart_path();
    if let Some(dir) = chart_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match chart::render(&chart_path, &report.chart_title(&opts), &report.series()) {
        Ok(()) => {
            report.chart = Some(chart_path.clone());
            println!("\nchart: {}", chart_path.display());
        }
        Err(e) => eprintln!("no chart: {e:#}"),
    }
    let json = report.json(&opts);
    std::fs::write(&opts.out, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("results: {}", opts.out.display());
    let problems = report.problems();
    for problem in &problems {
        eprintln!("FAILED: {problem}");
    }
    Ok(problems.is_empty())
}

async fn main_phases(
    opts: &Options,
    deployment: &Deployment,
    report: &mut Report,
    people: &mut People,
) -> Result<()> {
    let room = seed_room(deployment.servers[0].addr, opts.tasks).await?;
    report.rss_idle_kib = deployment.rss_kib();
    if opts.http {
        report.http = Some(http_ramp(opts, deployment, &room).await?);
    }
    if opts.pgbench {
        report.pgbench = Some(pgbench_phase(opts, deployment, &room, report.http.as_ref()).await);
    }
    if opts.ws {
        let cookies = people.ensure(deployment, opts.hold).await?;
        report.flood = Some(flood(opts, deployment, &room, cookies).await?);
    }
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

/// Signs in people `from..to` (cookie sessions: any process with the shared secret accepts
/// them, so the fan-out's pair of processes takes the same cookies).
async fn sign_in_many(
    deployment: &Deployment,
    from: usize,
    to: usize,
    prefix: &str,
) -> Result<Vec<String>> {
    let progress = bar(to.saturating_sub(from) as u64, "sign in");
    let addrs: Vec<_> = deployment.servers.iter().map(|s| s.addr).collect();
    let results: Vec<Result<String>> = stream::iter(from..to)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let progress = progress.clone();
            async move {
                let client = sign_in(addr, &format!("{prefix} {i}")).await?;
                progress.inc(1);
                Ok(client.cookie_header())
            }
        })
        // In order: person i keeps cookie i whichever run asks for them.
        .buffered(32)
        .collect()
        .await;
    progress.finish_and_clear();
    results.into_iter().collect()
}

/// The signed-in people the socket phases use, signed in once for the whole run.
#[derive(Default)]
struct People {
    cookies: Vec<String>,
}

impl People {
    async fn ensure(&mut self, deployment: &Deployment, n: usize) -> Result<&[String]> {
        if self.cookies.len() < n {
            let more = sign_in_many(deployment, self.cookies.len(), n, "person").await?;
            self.cookies.extend(more);
        }
        Ok(&self.cookies[..n])
    }
}

/// Signs in a person who makes rooms; returns the client and its CSRF token.
async fn room_maker(addr: std::net::SocketAddr) -> Result<(Client, String)> {
    let mut client = sign_in(addr, "Seeder").await?;
    let page = client.get("/rooms").await?;
    let token = http::csrf_token(&page.body).context("rooms page has a CSRF token")?;
    Ok((client, token))
}

async fn create_room(client: &mut Client, token: &str, name: &str) -> Result<i64> {
    let res = client
        .post(
            "/rooms",
            &[("authenticity_token", token), ("room[name]", name)],
            None,
        )
        .await?;
    res.location
        .as_deref()
        .and_then(|l| l.strip_prefix("/rooms/"))
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("create room: {} {}", res.status, res.body))
}

async fn open_room(client: &mut Client, id: i64) -> Result<Room> {
    let page = client.get(&format!("/rooms/{id}")).await?;
    let signed_stream = http::attribute_after(&page.body, "signed-stream-name=\"")
        .context("room page has a signed stream name")?;
    Ok(Room { id, signed_stream })
}

/// A room with `tasks` tasks, made through the forms as a person would.
async fn seed_room(addr: std::net::SocketAddr, tasks: usize) -> Result<Room> {
    let (mut client, token) = room_maker(addr).await?;
    let id = create_room(&mut client, &token, "Benchmark").await?;
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
    open_room(&mut client, id).await
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
    /// Creates and deletes that succeeded, and their rate over the window's last seconds,
    /// when (nearly) every user is active.
    mutations: u64,
    tail_secs: f64,
    tail_mutations_per_sec: f64,
    /// Requests finished in each second of the window.
    per_second: Vec<u64>,
    curves: Vec<chart::Series>,
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

    /// The response to `method path` if it is a 200; otherwise logs its status or error.
    fn ok(
        &mut self,
        method: &str,
        path: &str,
        result: Result<http::Response>,
    ) -> Option<http::Response> {
        match result {
            Ok(res) if res.status == 200 => Some(res),
            Ok(res) => {
                self.error(format!("{method} {path}: {}", res.status));
                None
            }
            Err(e) => {
                self.error(format!("{method} {path}: {e:#}"));
                None
            }
        }
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
    mutations: Arc<AtomicU64>,
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
        let token = log.ok("GET", &room_path, page).and_then(|res| {
            log.page.push(took);
            done.fetch_add(1, Ordering::Relaxed);
            http::csrf_token(&res.body)
        });
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
        let task = log.ok("POST", &tasks_path, created).and_then(|res| {
            log.create.push(took);
            done.fetch_add(1, Ordering::Relaxed);
            mutations.fetch_add(1, Ordering::Relaxed);
            http::task_id(&res.body)
        });
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
        if log.ok("DELETE", &path, deleted).is_some() {
            log.delete.push(took);
            done.fetch_add(1, Ordering::Relaxed);
            mutations.fetch_add(1, Ordering::Relaxed);
        }
    }
    log
}

async fn http_ramp(opts: &Options, deployment: &Deployment, room: &Room) -> Result<HttpResult> {
    let cookies = sign_in_many(deployment, 0, opts.users, "user").await?;
    let window = Duration::from_secs(opts.ramp_secs);
    let done = Arc::new(AtomicU64::new(0));
    let mutations = Arc::new(AtomicU64::new(0));
    let meter = CpuMeter::start(deployment.cpu_time());
    let start = tokio::time::Instant::now();
    let deadline = start + window;
    let mut users = JoinSet::new();
    for (i, cookie) in cookies.iter().enumerate() {
        let addr = deployment.servers[i % deployment.servers.len()].addr;
        let client =
            Client::with_cookie(addr, cookie).with_accept_encoding(opts.accept_encoding.clone());
        // User i joins at i/C of the window, so the last one arrives just before it closes.
        let begin = start + window.mul_f64(i as f64 / opts.users as f64);
        let (done, mutations, room) = (done.clone(), mutations.clone(), room.id);
        users.spawn(async move {
            tokio::time::sleep_until(begin).await;
            virtual_user(client, room, i, deadline, done, mutations).await
        });
    }
    let progress = bar(opts.ramp_secs, "1 HTTP ramp");
    // Counters read every 250 ms: (seconds into the window, requests, mutations).
    let mut samples: Vec<(f64, u64, u64)> = vec![(0.0, 0, 0)];
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = start.elapsed().as_secs_f64();
        samples.push((
            elapsed.min(window.as_secs_f64()),
            done.load(Ordering::Relaxed),
            mutations.load(Ordering::Relaxed),
        ));
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
    let mutation_count = (merged.create.len() + merged.delete.len()) as u64;
    // The last seventh of the window (10 s of 70): at least 6 in 7 users are active.
    let window_secs = window.as_secs_f64();
    let tail_from = window_secs * 6.0 / 7.0;
    let at = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|s| s.0 <= t)
            .copied()
            .unwrap_or_default()
    };
    let (tail_start, _, tail_mutations_start) = at(tail_from);
    let (tail_end, _, tail_mutations_end) = *samples.last().expect("one sample");
    let tail_secs = (tail_end - tail_start).max(1e-3);
    let per_second: Vec<u64> = (1..=opts.ramp_secs)
        .map(|t| at(t as f64).1.saturating_sub(at(t as f64 - 1.0).1))
        .collect();
    let all_summary = Summary::of(&mut all);
    let page = Summary::of(&mut merged.page);
    let create = Summary::of(&mut merged.create);
    let delete = Summary::of(&mut merged.delete);
    let result = HttpResult {
        users: opts.users,
        window_secs: opts.ramp_secs,
        requests: all.len() as u64,
        errors: merged.errors,
        first_error: merged.first_error,
        all: all_summary,
        page,
        create,
        delete,
        cpu,
        mutations: mutation_count,
        tail_secs,
        tail_mutations_per_sec: tail_mutations_end.saturating_sub(tail_mutations_start) as f64
            / tail_secs,
        per_second,
        curves: vec![
            series("HTTP GET room page", &merged.page),
            series("HTTP POST task (Turbo)", &merged.create),
            series("HTTP DELETE task", &merged.delete),
        ],
    };
    println!(
        "1 HTTP ramp: {} requests in {} s ({:.0}/s), {} errors; {}",
        result.requests,
        result.window_secs,
        result.requests as f64 / result.window_secs as f64,
        result.errors,
        result.all.line()
    );
    println!(
        "  Accept-Encoding: {}",
        opts.accept_encoding
            .as_deref()
            .unwrap_or("none (nothing compressed)")
    );
    println!(
        "  mutations (create + delete): {:.0}/s over the window, {:.0}/s in its last {:.0} s",
        result.mutations as f64 / window_secs,
        result.tail_mutations_per_sec,
        result.tail_secs
    );
    println!("  {}", result.cpu.line());
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL's own ceiling, with pgbench

enum PgbenchOutcome {
    Skipped(String),
    Failed(String),
    Ran(Vec<pgbench::PgbenchRun>),
}

async fn pgbench_phase(
    opts: &Options,
    deployment: &Deployment,
    room: &Room,
    http: Option<&HttpResult>,
) -> PgbenchOutcome {
    let Some(database) = deployment
        .database
        .as_ref()
        .and_then(servers::Database::postgres_name)
    else {
        let why = "SQLite has no pgbench; run with --processes 2 for PostgreSQL's ceiling";
        println!("pgbench: skipped ({why})");
        return PgbenchOutcome::Skipped(why.to_owned());
    };
    // The client count on the store's statements, then with the broadcast's too; then
    // both again with as many clients as the servers' pools have connections.
    let pools = servers::SERVER_POOL_SIZE * deployment.servers.len();
    let mut plan = vec![
        (pgbench::Script::Store, opts.users),
        (pgbench::Script::WithBroadcast, opts.users),
    ];
    if pools != opts.users {
        plan.push((pgbench::Script::Store, pools));
        plan.push((pgbench::Script::WithBroadcast, pools));
    }
    let mut runs = Vec::new();
    for (script, c) in plan {
        let progress = bar(opts.pgbench_secs, "pgbench");
        progress.set_message(format!("s, {c} clients"));
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.inc(1);
                }
            })
        };
        let outcome = pgbench::run(script, database, room.id, c, opts.pgbench_secs, || {
            deployment.cpu_time()
        })
        .await;
        ticker.abort();
        progress.finish_and_clear();
        match outcome {
            Ok(run) => {
                println!(
                    "pgbench, {}, {} clients, {} s: {:.0} mutations/s \
                     ({:.0} runs/s, {:.2} ms a create + delete on average, {} failed)",
                    run.script.label(),
                    run.clients,
                    run.secs,
                    run.mutations_per_sec(),
                    run.tps,
                    run.latency_ms,
                    run.failed
                );
                println!("  {}", run.cpu.line());
                if let Some(h) = http {
                    println!(
                        "  tasksync: {:.0} mutations/s in the ramp's last {:.0} s = {:.1}% of this",
                        h.tail_mutations_per_sec,
                        h.tail_secs,
                        100.0 * h.tail_mutations_per_sec / run.mutations_per_sec().max(1e-9)
                    );
                }
                runs.push(run);
            }
            Err(e) => {
                println!("pgbench failed: {e:#}");
                return PgbenchOutcome::Failed(format!("{e:#}"));
            }
        }
    }
    PgbenchOutcome::Ran(runs)
}

/// A chart series from samples that [`Summary::of`] has sorted.
fn series(name: &str, sorted: &[Duration]) -> chart::Series {
    chart::Series {
        name: format!("{name} (n = {})", sorted.len()),
        points: stats::percentile_curve(sorted),
    }
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
    /// The load generator's own memory with everything held (this process and its workers).
    generator_rss_kib: u64,
    cable_cpu: CpuShare,
    presence_cpu: CpuShare,
    top_up: Option<TopUp>,
    floor: FloorResult,
    curves: Vec<chart::Series>,
}

/// The pairs held beyond the flood's, opened in waves by worker processes.
struct TopUp {
    wanted: usize,
    connected: usize,
    rooms: usize,
    workers: usize,
    secs: f64,
    cable: Summary,
    presence: Summary,
    first_error: Option<String>,
    cpu: CpuShare,
    curves: Vec<chart::Series>,
}

/// What one burst of simultaneous connects did.
struct Burst {
    sockets: Vec<ws::Opening>,
    /// Handshake times of the successes.
    times: Vec<Duration>,
    errors: Vec<String>,
    /// CPU from the signal to the last answer, with `servers` as the server side.
    cpu: CpuShare,
}

/// Opens `n` sockets at the same moment, to servers whose process ids are `servers`.
async fn burst<F, Fut>(n: usize, name: &str, servers: &[u32], connect: F) -> Burst
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<ws::Opening>> + Send + 'static,
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
    let server_cpu = || -> Duration { servers.iter().map(|&pid| stats::proc_cpu_time(pid)).sum() };
    let meter = CpuMeter::start(server_cpu());
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
    let cpu = meter.stop(server_cpu());
    progress.finish_and_clear();
    Burst {
        sockets,
        times,
        errors,
        cpu,
    }
}

/// The same two floods against the floor server of [`floor`]: what 500 simultaneous
/// handshakes cost on this machine with these clients when the server does the least it can.
struct FloorResult {
    cable: Summary,
    presence: Summary,
    cable_cpu: CpuShare,
    presence_cpu: CpuShare,
    curves: Vec<chart::Series>,
}

async fn machine_floor(n: usize, identifier: &str, room: i64) -> Result<FloorResult> {
    let server = floor::Floor::start().await?;
    let pids: Vec<u32> = server.pid().into_iter().collect();
    let origin = server.origin.clone();
    // The floor server ignores the cookie; the clients send one as they do to tasksync.
    let cables = burst(n, "2 floor /cable", &pids, |_| {
        let (origin, identifier) = (origin.clone(), identifier.to_owned());
        async move { ws::cable(&origin, "floor=1", &identifier, None).await }
    })
    .await;
    let presences = burst(n, "2 floor presence", &pids, |_| {
        let origin = origin.clone();
        async move { ws::presence(&origin, "floor=1", room, None).await }
    })
    .await;
    drop((cables.sockets, presences.sockets));
    server.stop().await;
    let failed = cables.errors.len() + presences.errors.len();
    if failed > 0 {
        let first = cables.errors.first().or(presences.errors.first());
        bail!("{failed} handshakes with the floor server failed: {first:?}");
    }
    let (mut cable_times, mut presence_times) = (cables.times, presences.times);
    let result = FloorResult {
        cable: Summary::of(&mut cable_times),
        presence: Summary::of(&mut presence_times),
        cable_cpu: cables.cpu,
        presence_cpu: presences.cpu,
        curves: vec![
            series(&format!("floor server: /cable flood of {n}"), &cable_times),
            series(
                &format!("floor server: presence flood of {n}"),
                &presence_times,
            ),
        ],
    };
    Ok(result)
}

fn per_handshake(cpu: &CpuShare, n: usize) -> Value {
    let (generator, servers) = cpu.per_item_us(n);
    json!({"generator": round(generator), "servers": round(servers)})
}

impl FloorResult {
    fn print(&self) {
        println!(
            "  the machine's floor, a server answering with pre-built bytes (no session, hub, \
             database or WebSocket library), same clients:"
        );
        println!("    /cable to confirm_subscription {}", self.cable.line());
        println!("    {}", self.cable_cpu.line());
        println!("    {}", self.cable_cpu.burst_line(self.cable.count));
        println!("    presence to presence_state {}", self.presence.line());
        println!("    {}", self.presence_cpu.line());
        println!("    {}", self.presence_cpu.burst_line(self.presence.count));
    }

    fn json(&self) -> Value {
        json!({
            "cable_handshake": self.cable.json(),
            "cable_cpu": self.cable_cpu.json(),
            "cable_cpu_per_handshake_us": per_handshake(&self.cable_cpu, self.cable.count),
            "presence_handshake": self.presence.json(),
            "presence_cpu": self.presence_cpu.json(),
            "presence_cpu_per_handshake_us": per_handshake(&self.presence_cpu, self.presence.count),
        })
    }
}

/// How long a server needs after its last request or socket close to have given its free
/// memory back: it checks once every quiet period, and trims after the first one with nothing
/// in it, so 1 to 2 periods after the last activity (`tasksync::memory`); a little more, so
/// memory is never read just before the trim.
const AFTER_A_BURST: Duration =
    Duration::from_millis(2 * tasksync::memory::QUIET.as_millis() as u64 + 500);

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
    // Let the HTTP phase's connections wind down, and the servers give back what the burst
    // left free, so "before" is the idle server.
    tokio::time::sleep(AFTER_A_BURST).await;
    let rss_before_kib = deployment.rss_kib();

    let servers = deployment.pids();
    let cables = burst(n, "2 /cable", &servers, |i| {
        let origin = origins[i % origins.len()].clone();
        let cookie = cookies[i % cookies.len()].clone();
        let identifier = identifier.clone();
        async move { ws::cable(&origin, &cookie, &identifier, None).await }
    })
    .await;
    let (cable_cpu, mut cable_times, cable_errors) = (cables.cpu, cables.times, cables.errors);
    let mut held: Vec<_> = cables.sockets.into_iter().map(ws::hold).collect();

    let room_id = room.id;
    let presences = burst(n, "2 presence", &servers, |i| {
        let origin = origins[i % origins.len()].clone();
        let cookie = cookies[i % cookies.len()].clone();
        async move { ws::presence(&origin, &cookie, room_id, None).await }
    })
    .await;
    let (presence_cpu, mut presence_times, presence_errors) =
        (presences.cpu, presences.times, presences.errors);
    let mut pairs = held.len().min(presences.sockets.len());
    held.extend(presences.sockets.into_iter().map(ws::hold));

    let mut workers = Vec::new();
    let top_up = if opts.hold > n {
        let (top_up, started) = open_top_up(opts, deployment, &cookies[n..opts.hold]).await;
        workers = started;
        let top_up = top_up?;
        pairs += top_up.connected;
        Some(top_up)
    } else {
        None
    };

    // Presence batches its join diffs every 100 ms; give the storm time to settle before
    // reading memory (longer with thousands of sockets).
    let settle = if opts.hold > 2000 { 6 } else { 3 };
    let progress = bar(settle, "3 hold");
    progress.set_message(format!("s, {pairs} pairs open"));
    for _ in 0..settle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress.inc(1);
    }
    let rss_held_kib = deployment.rss_kib();
    let generator_rss_kib = stats::generator_rss_kib();
    progress.finish_and_clear();
    for socket in &held {
        socket.abort();
    }
    drop(held);
    for worker in workers {
        worker.stop().await;
    }
    tokio::time::sleep(AFTER_A_BURST).await;
    let rss_after_kib = deployment.rss_kib();

    // After tasksync's sockets are closed, so the two do not share the machine.
    let floor = machine_floor(n, &identifier, room_id).await?;

    let first_error = cable_errors.first().or(presence_errors.first()).cloned();
    let cable = Summary::of(&mut cable_times);
    let presence = Summary::of(&mut presence_times);
    let result = FloodResult {
        pairs,
        cable,
        cable_failures: cable_errors.len(),
        presence,
        presence_failures: presence_errors.len(),
        first_error,
        rss_before_kib,
        rss_held_kib,
        rss_after_kib,
        generator_rss_kib,
        cable_cpu,
        presence_cpu,
        top_up,
        floor,
        curves: vec![
            series(
                &format!("/cable flood of {n}, to confirm_subscription"),
                &cable_times,
            ),
            series(
                &format!("presence flood of {n}, to presence_state"),
                &presence_times,
            ),
        ],
    };
    println!(
        "2 WebSocket flood of {n}: /cable to confirm_subscription {}, {} failed",
        result.cable.line(),
        result.cable_failures
    );
    println!("  {}", result.cable_cpu.line());
    println!("  {}", result.cable_cpu.burst_line(n));
    println!(
        "  presence to presence_state {}, {} failed",
        result.presence.line(),
        result.presence_failures
    );
    println!("  {}", result.presence_cpu.line());
    println!("  {}", result.presence_cpu.burst_line(n));
    if let Some(e) = &result.first_error {
        println!("  first failure: {e}");
    }
    result.floor.print();
    if let Some(t) = &result.top_up {
        println!(
            "3 top-up: {} of {} more pairs in {} rooms, {} worker process(es), {} at a time, in {:.1} s",
            t.connected, t.wanted, t.rooms, t.workers, opts.wave, t.secs
        );
        println!("  cable {}", t.cable.line());
        println!("  presence {}", t.presence.line());
        println!("  {}", t.cpu.line());
        if let Some(e) = &t.first_error {
            println!("  first failure: {e}");
        }
    }
    println!(
        "3 hold {} pairs: server RSS {:.1} MiB before, {:.1} MiB held ({:.1} KiB per pair), {:.1} MiB after closing",
        result.pairs,
        mib(result.rss_before_kib),
        mib(result.rss_held_kib),
        result.kib_per_pair(),
        mib(result.rss_after_kib)
    );
    println!(
        "  load generator RSS {:.1} MiB with them held",
        mib(result.generator_rss_kib)
    );
    Ok(result)
}

/// Opens the pairs beyond the flood's through worker processes: rooms of `--room-size`
/// people, `--wave` handshakes at a time per worker. Returns the workers, still holding.
async fn open_top_up(
    opts: &Options,
    deployment: &Deployment,
    cookies: &[String],
) -> (Result<TopUp>, Vec<hold::Worker>) {
    let mut workers = Vec::new();
    let outcome = top_up_with(opts, deployment, cookies, &mut workers).await;
    (outcome, workers)
}

async fn top_up_with(
    opts: &Options,
    deployment: &Deployment,
    cookies: &[String],
    workers: &mut Vec<hold::Worker>,
) -> Result<TopUp> {
    let wanted = cookies.len();
    let rooms_needed = wanted.div_ceil(opts.room_size);
    let progress = bar(rooms_needed as u64, "3 rooms");
    let (mut maker, token) = room_maker(deployment.servers[0].addr).await?;
    let mut rooms = Vec::with_capacity(rooms_needed);
    for r in 0..rooms_needed {
        let id = create_room(&mut maker, &token, &format!("Held {r}")).await?;
        rooms.push(open_room(&mut maker, id).await?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let pairs: Vec<hold::PairSpec> = cookies
        .iter()
        .enumerate()
        .map(|(j, cookie)| {
            let room = &rooms[j / opts.room_size];
            hold::PairSpec {
                origin: deployment.servers[j % deployment.servers.len()]
                    .origin
                    .clone(),
                cookie: cookie.clone(),
                room: room.id,
                identifier: ws::identifier(&room.signed_stream),
            }
        })
        .collect();
    // Each worker holds 2 sockets a pair under its own open-file limit; at most 5,000 pairs a
    // worker so the handshakes spread over more than one process.
    let per_worker = (raise_nofile() as usize)
        .saturating_sub(200)
        .div_euclid(2)
        .clamp(1, 5000);
    let chunks: Vec<Vec<hold::PairSpec>> = pairs
        .chunks(wanted.div_ceil(wanted.div_ceil(per_worker)))
        .map(<[hold::PairSpec]>::to_vec)
        .collect();
    let deadline = Duration::from_secs(120 + wanted as u64 / 50);
    let meter = CpuMeter::start(deployment.cpu_time());
    let started = Instant::now();
    for (i, chunk) in chunks.into_iter().enumerate() {
        workers
            .push(hold::Worker::start(chunk, hold::source_address(i), opts.wave, deadline).await?);
    }
    let progress = bar(wanted as u64, "3 top-up");
    let counts: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; workers.len()]));
    let outcomes = futures_util::future::join_all(workers.iter_mut().enumerate().map(|(i, w)| {
        let (counts, progress) = (counts.clone(), progress.clone());
        w.outcome(move |n| {
            let mut counts = counts.lock().expect("counts");
            counts[i] = n;
            progress.set_position(counts.iter().sum::<usize>() as u64);
        })
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = meter.stop(deployment.cpu_time());
    progress.finish_and_clear();
    let (mut connected, mut first_error) = (0, None);
    let (mut cable, mut presence) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        let outcome = outcome?;
        connected += outcome.connected;
        if first_error.is_none() {
            first_error = outcome.first_error;
        }
        cable.extend(outcome.cable_us.into_iter().map(Duration::from_micros));
        presence.extend(outcome.presence_us.into_iter().map(Duration::from_micros));
    }
    let cable_summary = Summary::of(&mut cable);
    let presence_summary = Summary::of(&mut presence);
    let curves = vec![
        series(
            &format!("/cable hold top-up, {} at a time a worker", opts.wave),
            &cable,
        ),
        series(
            &format!("presence hold top-up, {} at a time a worker", opts.wave),
            &presence,
        ),
    ];
    Ok(TopUp {
        wanted,
        connected,
        rooms: rooms.len(),
        workers: workers.len(),
        secs,
        cable: cable_summary,
        presence: presence_summary,
        first_error,
        cpu,
        curves,
    })
}

impl FloodResult {
    /// KiB a held pair adds to the servers' RSS.
    fn kib_per_pair(&self) -> f64 {
        self.rss_held_kib.saturating_sub(self.rss_before_kib) as f64 / self.pairs.max(1) as f64
    }
}

/// KiB (what `/proc` counts) in MiB, as `free -m` and `top` count.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// KiB in decimal kilobytes (10^3 bytes): the stricter reading of the "16 KB" and
/// "25 MB", so a target is only called met when it is met in either unit.
fn kb(kib: f64) -> f64 {
    kib * 1.024
}

/// KiB in decimal megabytes (10^6 bytes), as [`kb`].
fn mb(kib: u64) -> f64 {
    kb(kib as f64) / 1000.0
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
    /// Per post, from just before its POST to its first and to its last delivery.
    first_arrival: Summary,
    last_arrival: Summary,
    first_error: Option<String>,
    cpu: CpuShare,
    curves: Vec<chart::Series>,
}

const MARKER: &str = "fanout-";

async fn fanout(
    opts: &Options,
    deployment: &Deployment,
    people: &mut People,
) -> Result<FanoutResult> {
    let room = seed_room(deployment.servers[0].addr, opts.tasks).await?;
    let cookies = people.ensure(deployment, opts.subscribers).await?;
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
                    ws::cable(&origin, &cookie, &identifier, None),
                )
                .await
                .context("subscribe timed out")??;
                progress.inc(1);
                // Read by tungstenite: each subscriber looks for the posts in its messages.
                anyhow::Ok(socket.into_socket().await)
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
    let mut per_post: Vec<Vec<Duration>> = vec![Vec::new(); opts.posts];
    let sent_at = sent_at.lock().expect("sent_at").clone();
    let mut open = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        let (seen, socket) = receiver.await?;
        open.push(socket);
        for (k, arrived) in seen.into_iter().enumerate() {
            if let (Some(arrived), Some(sent)) = (arrived, sent_at[k])
                && !failed_posts[k]
            {
                per_post[k].push(arrived.saturating_duration_since(sent));
            }
        }
    }
    // Each post's first and last arrival: the first is the commit and the notification (the
    // POST's own response may come later, queued behind the fan-out on its server), the gap to
    // the last is the fan-out itself.
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    for arrivals in &per_post {
        if let (Some(first), Some(last)) = (arrivals.iter().min(), arrivals.iter().max()) {
            firsts.push(*first);
            lasts.push(*last);
        }
    }
    let cpu = meter.stop(deployment.cpu_time());
    stream::iter(open)
        .for_each_concurrent(256, |mut socket| async move {
            let _ = socket.close(None).await;
        })
        .await;
    progress.finish_and_clear();
    let good_posts = opts.posts - post_errors;
    let mut latencies = per_post.concat();
    let latency = Summary::of(&mut latencies);
    let curves = vec![series(
        &format!(
            "fan-out delivery, {subscribers} subscribers on 2 processes, {}/s",
            opts.rate
        ),
        &latencies,
    )];
    let result = FanoutResult {
        subscribers,
        subscribe_failures,
        posts: opts.posts,
        post_errors,
        rate: opts.rate,
        expected: subscribers * good_posts,
        delivered: latencies.len(),
        latency,
        post_latency: Summary::of(&mut post_times),
        first_arrival: Summary::of(&mut firsts),
        last_arrival: Summary::of(&mut lasts),
        first_error,
        cpu,
        curves,
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
    println!("  a post's first delivery: {}", result.first_arrival.line());
    println!("  a post's last delivery: {}", result.last_arrival.line());
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
    pgbench: Option<PgbenchOutcome>,
    flood: Option<FloodResult>,
    fanout: Option<FanoutResult>,
    js: Option<JsLines>,
    chart: Option<PathBuf>,
    total_secs: f64,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Milliseconds for the table, or a dash for a phase that did not run.
fn cell(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} {unit}"))
}

impl Report {
    /// Every phase's CPU: (phase, share).
    fn cpu_rows(&self) -> Vec<(String, CpuShare)> {
        let mut rows = Vec::new();
        if let Some(h) = &self.http {
            rows.push(("1 HTTP ramp".to_owned(), h.cpu));
        }
        if let Some(PgbenchOutcome::Ran(runs)) = &self.pgbench {
            for run in runs {
                let what = match run.script {
                    pgbench::Script::Store => "store",
                    pgbench::Script::WithBroadcast => "+broadcast",
                };
                rows.push((format!("pgbench {what}, {} cl.", run.clients), run.cpu));
            }
        }
        if let Some(f) = &self.flood {
            rows.push(("2 /cable flood".to_owned(), f.cable_cpu));
            rows.push(("2 presence flood".to_owned(), f.presence_cpu));
            rows.push(("2 floor /cable".to_owned(), f.floor.cable_cpu));
            rows.push(("2 floor presence".to_owned(), f.floor.presence_cpu));
            if let Some(t) = &f.top_up {
                rows.push(("3 hold top-up".to_owned(), t.cpu));
            }
        }
        if let Some(o) = &self.fanout {
            rows.push(("4 fan-out".to_owned(), o.cpu));
        }
        rows
    }

    fn series(&self) -> Vec<chart::Series> {
        let mut all = Vec::new();
        let mut take = |curves: &[chart::Series]| {
            all.extend(curves.iter().map(|c| chart::Series {
                name: c.name.clone(),
                points: c.points.clone(),
            }));
        };
        if let Some(h) = &self.http {
            take(&h.curves);
        }
        if let Some(f) = &self.flood {
            take(&f.curves);
            take(&f.floor.curves);
            if let Some(t) = &f.top_up {
                take(&t.curves);
            }
        }
        if let Some(o) = &self.fanout {
            take(&o.curves);
        }
        all
    }

    fn chart_title(&self, opts: &Options) -> String {
        let run = if opts.quick {
            " (--quick)"
        } else if opts.large {
            " (--large)"
        } else {
            ""
        };
        let deployment = if self.deployment.is_empty() {
            String::new()
        } else {
            format!(", {}", self.deployment)
        };
        format!("tasksync latency percentiles{run}{deployment}")
    }

    fn print(&self, opts: &Options) {
        let (h, f, o) = (&self.http, &self.flood, &self.fanout);
        let js_total = self.js.as_ref().map_or(0, |js| js.total);
        println!(
            "\n| model | HTTP p50 | WS handshake p50 | requests in {} s | client JS written | memory at {} conns |",
            h.as_ref().map_or(opts.ramp_secs, |h| h.window_secs),
            f.as_ref().map_or(opts.hold, |f| f.pairs)
        );
        println!("|---|---|---|---|---|---|");
        println!("| stateful (Phoenix LiveView) | 130 ms | 30 ms | ~3,200 | 0 lines | ~70 MB |");
        println!(
            "| split-transport (Rails Hotwire) | 1,484 ms | 418 ms | ~640 | ~200 lines | ~70 MB |"
        );
        println!(
            "| tasksync ({}) | {} | {} | {} | {} lines | {} |",
            if self.deployment.is_empty() {
                "fan-out only"
            } else {
                &self.deployment
            },
            cell(h.as_ref().map(|h| h.all.p50), "ms"),
            cell(f.as_ref().map(|f| f.cable.p50), "ms"),
            h.as_ref()
                .map_or("-".to_owned(), |h| h.requests.to_string()),
            js_total,
            f.as_ref().map_or("-".to_owned(), |f| format!(
                "{:.2} MiB ({:.2} MB)",
                mib(f.rss_held_kib),
                mb(f.rss_held_kib)
            )),
        );
        if opts.quick {
            println!(
                "\n(--quick: smaller sizes and a shorter window; not comparable with the targets)"
            );
        }
        println!("\nagainst the issue's targets:");
        let mut rows: Vec<(String, bool)> = Vec::new();
        let mut floor_note = None;
        if let Some(h) = h {
            rows.push((
                format!("HTTP p50 {:.2} ms <= 5 ms", h.all.p50),
                h.all.p50 <= 5.0,
            ));
            rows.push((
                format!("HTTP p99 {:.2} ms <= 25 ms", h.all.p99),
                h.all.p99 <= 25.0,
            ));
            rows.push((
                format!("requests in {} s: {} >= 300,000", h.window_secs, h.requests),
                h.requests >= 300_000,
            ));
        }
        if let Some(f) = f {
            rows.push((
                format!(
                    "cable handshake p50 {:.2} / p99 {:.2} ms <= 5 / 30 ms, {} failures",
                    f.cable.p50, f.cable.p99, f.cable_failures
                ),
                f.cable.p50 <= 5.0 && f.cable.p99 <= 30.0 && f.cable_failures == 0,
            ));
            rows.push((
                format!(
                    "presence handshake p50 {:.2} / p99 {:.2} ms <= 5 / 30 ms, {} failures",
                    f.presence.p50, f.presence.p99, f.presence_failures
                ),
                f.presence.p50 <= 5.0 && f.presence.p99 <= 30.0 && f.presence_failures == 0,
            ));
            // What the CPU alone allows: the first half of a flood done in 5 ms on every core,
            // and all of it in 30 ms, bound the CPU a handshake may cost both sides together.
            let n = f.cable.count.max(1) as f64;
            let (generator, _) = f.cable_cpu.per_item_us(f.cable.count);
            let (floor_generator, floor_server) =
                f.floor.cable_cpu.per_item_us(f.floor.cable.count);
            let budget_p50 = 5_000.0 * cores() as f64 / (n / 2.0);
            let budget_p99 = 30_000.0 * cores() as f64 / n;
            floor_note = Some(format!(
                "  (the machine's floor, a server answering with pre-built bytes, flooded by the \
                 same clients: /cable p50 {:.2} / p99 {:.2} ms, presence p50 {:.2} / p99 {:.2} \
                 ms; tasksync at {:.1}x and {:.1}x the floor's p50)\n  \
                 (on {} cores a p50 of 5 ms allows at most {budget_p50:.0} µs of CPU a handshake, \
                 both sides together, and a p99 of 30 ms {budget_p99:.0} µs; the load generator \
                 alone used {generator:.0} µs a /cable handshake, and against the floor server \
                 {floor_generator:.0} µs beside the floor's {floor_server:.0})",
                f.floor.cable.p50,
                f.floor.cable.p99,
                f.floor.presence.p50,
                f.floor.presence.p99,
                f.cable.p50 / f.floor.cable.p50.max(1e-9),
                f.presence.p50 / f.floor.presence.p50.max(1e-9),
                cores(),
            ));
            if f.pairs >= 10_000 {
                rows.push((
                    format!(
                        "RSS at {} held pairs: {:.1} kB ({:.1} KiB) a pair <= 16 KB",
                        f.pairs,
                        kb(f.kib_per_pair()),
                        f.kib_per_pair()
                    ),
                    kb(f.kib_per_pair()) <= 16.0,
                ));
            } else {
                rows.push((
                    format!(
                        "RSS at {} held pairs {:.2} MB ({:.2} MiB) <= 25 MB",
                        f.pairs,
                        mb(f.rss_held_kib),
                        mib(f.rss_held_kib)
                    ),
                    mb(f.rss_held_kib) <= 25.0,
                ));
            }
        }
        if let Some(o) = o {
            let limit = if o.subscribers >= 10_000 { 250.0 } else { 50.0 };
            rows.push((
                format!(
                    "fan-out p99 {:.2} ms <= {limit} ms to {} subscribers at {}/s, {} lost",
                    o.latency.p99,
                    o.subscribers,
                    o.rate,
                    o.lost()
                ),
                o.latency.p99 <= limit && o.lost() == 0,
            ));
        }
        rows.push((
            format!("client JavaScript {js_total} lines <= 60"),
            js_total <= 60,
        ));
        for (what, met) in rows {
            let mark = if opts.quick { "-" } else { verdict(met) };
            println!("  [{mark:>6}] {what}");
        }
        if let Some(note) = floor_note {
            println!("{note}");
        }
        if f.as_ref().is_none_or(|f| f.pairs < 10_000)
            || o.as_ref().is_none_or(|o| o.subscribers < 10_000)
        {
            println!(
                "  (--large runs the 10,000-pair hold (<= 16 KB a pair) and fan-out to 10,000 subscribers at 5/s (p99 <= 250 ms))"
            );
        }

        self.print_extended();
        self.print_cpu();
        println!("\ntotal time {:.1} s", self.total_secs);
    }

    fn print_extended(&self) {
        println!("\nextended figures:");
        if let Some(h) = &self.http {
            println!(
                "  HTTP, {} users over {} s: {} requests ({:.0}/s), {} errors",
                h.users,
                h.window_secs,
                h.requests,
                h.requests as f64 / h.window_secs.max(1) as f64,
                h.errors
            );
            println!("    all          {}", h.all.line());
            println!("    GET room     {}", h.page.line());
            println!("    POST task    {}", h.create.line());
            println!("    DELETE task  {}", h.delete.line());
            println!(
                "    mutations {:.0}/s over the window, {:.0}/s in its last {:.0} s",
                h.mutations as f64 / h.window_secs.max(1) as f64,
                h.tail_mutations_per_sec,
                h.tail_secs
            );
        }
        match &self.pgbench {
            Some(PgbenchOutcome::Ran(runs)) => {
                for run in runs {
                    let ratio = self.http.as_ref().map_or(String::new(), |h| {
                        format!(
                            "; tasksync's {:.0}/s is {:.1}% of it",
                            h.tail_mutations_per_sec,
                            100.0 * h.tail_mutations_per_sec / run.mutations_per_sec().max(1e-9)
                        )
                    });
                    println!(
                        "  pgbench ceiling, {}, {} clients: {:.0} mutations/s ({:.2} ms a create + delete){ratio}",
                        run.script.label(),
                        run.clients,
                        run.mutations_per_sec(),
                        run.latency_ms
                    );
                }
            }
            Some(PgbenchOutcome::Skipped(why)) => println!("  pgbench: skipped ({why})"),
            Some(PgbenchOutcome::Failed(e)) => println!("  pgbench: failed ({e})"),
            None => {}
        }
        if let Some(f) = &self.flood {
            println!("  /cable flood  {}", f.cable.line());
            println!("  presence flood {}", f.presence.line());
            if let Some(t) = &f.top_up {
                println!(
                    "  top-up of {} pairs ({} opened) in {:.1} s: cable {}",
                    t.wanted,
                    t.connected,
                    t.secs,
                    t.cable.line()
                );
            }
            println!(
                "  hold of {} pairs: servers' RSS {:.1} MiB idle-ish, {:.1} MiB held, {:.1} KiB a pair, {:.1} MiB after; generator {:.1} MiB",
                f.pairs,
                mib(f.rss_before_kib),
                mib(f.rss_held_kib),
                f.kib_per_pair(),
                mib(f.rss_after_kib),
                mib(f.generator_rss_kib)
            );
        }
        if let Some(o) = &self.fanout {
            println!(
                "  fan-out delivery {}; {} of {} delivered",
                o.latency.line(),
                o.delivered,
                o.expected
            );
            println!("  fan-out POST     {}", o.post_latency.line());
            println!("  a post's first delivery {}", o.first_arrival.line());
            println!("  a post's last delivery  {}", o.last_arrival.line());
        }
    }

    fn print_cpu(&self) {
        let rows = self.cpu_rows();
        if rows.is_empty() {
            return;
        }
        let n = cores() as f64;
        println!(
            "\nis the load generator the bottleneck? CPU per phase, in cores ({} in all):",
            cores()
        );
        println!(
            "  {:<28} {:>9} {:>8} {:>6} {:>6} {:>13}",
            "phase", "generator", "servers", "rest", "busy", "disk stalls"
        );
        for (phase, c) in &rows {
            let rest = c
                .other_cores()
                .map_or("–".to_owned(), |r| format!("{r:.2}"));
            let busy = c
                .busy_share()
                .map_or("–".to_owned(), |b| format!("{:.0}%", 100.0 * b));
            println!(
                "  {:<28} {:>9.2} {:>8.2} {:>6} {:>6} {:>10.0} ms",
                phase, c.generator_cores, c.server_cores, rest, busy, c.io_stalled_ms
            );
        }
        if let Some((phase, worst)) = rows
            .iter()
            .filter(|(p, _)| !p.starts_with("pgbench"))
            .max_by(|a, b| a.1.generator_cores.total_cmp(&b.1.generator_cores))
        {
            println!(
                "  the generator's largest share: {:.0}% of the machine ({phase}, where the servers used {:.2} cores)",
                100.0 * worst.generator_cores / n,
                worst.server_cores
            );
        }
        println!(
            "  (rest: PostgreSQL, Redis, pgbench and anything else on the machine; busy: the whole machine;\n   \
             both from /proc/stat's 10 ms ticks, so not given (–) for a phase under {} s, such as a flood;",
            stats::MACHINE_WINDOW.as_secs()
        );
        println!(
            "   disk stalls: time everything runnable waited on the disk, /proc/pressure/io, which holds up commits)"
        );
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
        if let Some(t) = self.flood.as_ref().and_then(|f| f.top_up.as_ref())
            && t.connected < t.wanted
        {
            problems.push(format!(
                "hold: {} of {} more pairs opened (first failure: {})",
                t.connected,
                t.wanted,
                t.first_error.as_deref().unwrap_or("?")
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
        if let Some(PgbenchOutcome::Failed(e)) = &self.pgbench {
            problems.push(format!("pgbench: {e}"));
        }
        problems
    }

    fn json(&self, opts: &Options) -> Value {
        let machine = json!({
            "cores": cores(),
            "cpu": cpu_model(),
            "memory_kib": mem_total_kib(),
        });
        let pgbench = self.pgbench.as_ref().map(|p| match p {
            PgbenchOutcome::Ran(runs) => json!({
                "runs": runs.iter().map(|run| {
                    let mut v = run.json();
                    if let Some(h) = &self.http {
                        v["tasksync_mutations_per_sec"] = json!(round(h.tail_mutations_per_sec));
                        v["tasksync_share"] =
                            json!(round(h.tail_mutations_per_sec / run.mutations_per_sec().max(1e-9)));
                    }
                    v
                }).collect::<Vec<_>>(),
            }),
            PgbenchOutcome::Skipped(why) => json!({ "skipped": why }),
            PgbenchOutcome::Failed(e) => json!({ "failed": e }),
        });
        json!({
            "quick": opts.quick,
            "large": opts.large,
            "deployment": self.deployment,
            "machine": machine,
            "options": {
                "processes": opts.processes,
                "users": opts.users,
                "ramp_secs": opts.ramp_secs,
                "connections": opts.connections,
                "hold": opts.hold,
                "room_size": opts.room_size,
                "wave": opts.wave,
                "subscribers": opts.subscribers,
                "posts": opts.posts,
                "rate_per_sec": opts.rate,
                "tasks": opts.tasks,
                "accept_encoding": opts.accept_encoding,
                "pgbench_secs": opts.pgbench.then_some(opts.pgbench_secs),
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
                "mutations": h.mutations,
                "tail_secs": round(h.tail_secs),
                "tail_mutations_per_sec": round(h.tail_mutations_per_sec),
                "requests_per_second": h.per_second,
                "cpu": h.cpu.json(),
            })),
            "pgbench": pgbench,
            "flood": self.flood.as_ref().map(|f| json!({
                "connections": opts.connections,
                "cable_handshake": f.cable.json(),
                "cable_failures": f.cable_failures,
                "cable_cpu": f.cable_cpu.json(),
                "cable_cpu_per_handshake_us": per_handshake(&f.cable_cpu, f.cable.count),
                "presence_handshake": f.presence.json(),
                "presence_failures": f.presence_failures,
                "presence_cpu": f.presence_cpu.json(),
                "presence_cpu_per_handshake_us": per_handshake(&f.presence_cpu, f.presence.count),
                "floor": f.floor.json(),
            })),
            "hold": self.flood.as_ref().map(|f| json!({
                "pairs": f.pairs,
                "rss_before_kib": f.rss_before_kib,
                "rss_held_kib": f.rss_held_kib,
                "rss_after_kib": f.rss_after_kib,
                "kb_per_pair": round(f.kib_per_pair()),
                "generator_rss_kib": f.generator_rss_kib,
                "top_up": f.top_up.as_ref().map(|t| json!({
                    "wanted": t.wanted,
                    "opened": t.connected,
                    "rooms": t.rooms,
                    "workers": t.workers,
                    "wave": opts.wave,
                    "secs": round(t.secs),
                    "cable_handshake": t.cable.json(),
                    "presence_handshake": t.presence.json(),
                    "cpu": t.cpu.json(),
                })),
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
                "first_delivery_per_post": o.first_arrival.json(),
                "last_delivery_per_post": o.last_arrival.json(),
                "cpu": o.cpu.json(),
            })),
            "client_js": self.js.as_ref().map(|js| json!({
                "total_lines": js.total,
                "files": js.files.iter().map(|(f, n)| json!({"file": f, "lines": n})).collect::<Vec<_>>(),
            })),
            "cpu": self.cpu_rows().iter().map(|(phase, c)| {
                let mut v = c.json();
                v["phase"] = json!(phase);
                v
            }).collect::<Vec<_>>(),
            "chart": self.chart.as_ref().map(|p| p.display().to_string()),
            "chart_title": self.chart_title(opts),
            "chart_series": self.series().iter().map(chart::Series::json).collect::<Vec<_>>(),
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
