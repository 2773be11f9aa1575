//! config/deploy/nginx.conf, as shipped, in front of two tasksync processes on one PostgreSQL
//! database: pages load through it, both WebSockets upgrade through it, and a cable subscriber
//! connected through nginx to one process receives a change made on the other. nginx runs
//! unprivileged on a free port with a temporary prefix; it must be installed (bin/test does
//! that with apt-get), and the test fails, never skips, without it.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Stdio, time::Duration};

use reqwest::StatusCode;
use tokio::process::{Child, Command};

use crate::{
    cable_client::{Cable, handshake, identifier, signed_stream_in},
    helpers::free_port,
    processes::{Cluster, ServerProcess},
};

const NGINX: &str = "/usr/sbin/nginx";
const SITE: &str = include_str!("../../config/deploy/nginx.conf");

/// The shipped site with its listen address and upstream servers pointed at the test's.
fn site_for(listen: u16, upstreams: [&str; 2]) -> String {
    let mut site = SITE.to_owned();
    for (from, to) in [
        (
            "listen 80;".to_owned(),
            format!("listen 127.0.0.1:{listen};"),
        ),
        (
            "server 127.0.0.1:3000;".to_owned(),
            format!("server {};", upstreams[0]),
        ),
        (
            "server 127.0.0.1:3001;".to_owned(),
            format!("server {};", upstreams[1]),
        ),
    ] {
        assert_eq!(
            site.matches(&from).count(),
            1,
            "config/deploy/nginx.conf should contain `{from}` once"
        );
        site = site.replace(&from, &to);
    }
    site
}

/// nginx, killed on drop, with its temporary prefix.
struct Nginx {
    _child: Child,
    _prefix: tempfile::TempDir,
    address: String,
}

async fn start_nginx(upstreams: [&str; 2]) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is required for this test and is missing at {NGINX}: install it with \
         `apt-get install -y nginx-light` (bin/test does)"
    );
    let prefix = tempfile::tempdir().expect("temp dir");
    let dir = prefix.path();
    // Workers may run as another user when the test runs as root: let them write.
    for sub in ["temp", "logs"] {
        let path = dir.join(sub);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let port = free_port();
    std::fs::write(dir.join("tasksync.conf"), site_for(port, upstreams)).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           access_log {d}/logs/access.log;\n\
           client_body_temp_path {d}/temp/body;\n\
           proxy_temp_path {d}/temp/proxy;\n\
           fastcgi_temp_path {d}/temp/fastcgi;\n\
           uwsgi_temp_path {d}/temp/uwsgi;\n\
           scgi_temp_path {d}/temp/scgi;\n\
           include {d}/tasksync.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let conf = dir.join("nginx.conf");
    let args = |test: bool| {
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("logs/error.log"));
        if test {
            cmd.arg("-t");
        }
        cmd
    };
    let check = args(true).output().await.expect("nginx -t runs");
    assert!(
        check.status.success(),
        "nginx rejects config/deploy/nginx.conf: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = args(false)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    let address = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(res) = reqwest::get(format!("{address}/up")).await
            && res.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx did not proxy /up on {address} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Nginx {
        _child: child,
        _prefix: prefix,
        address,
    }
}

fn host_port(process: &ServerProcess) -> &str {
    process.address.trim_start_matches("http://")
}

#[tokio::test]
async fn the_shipped_nginx_config_fronts_two_processes_and_carries_the_cable_between_them() {
    // As docs/operations.md says to run it: the app believes nginx's forwarded headers.
    let cluster = Cluster::new(&[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let a = cluster.start().await;
    let b = cluster.start().await;
    let nginx = start_nginx([host_port(&a), host_port(&b)]).await;

    // Pages through nginx, whichever process answers each request.
    let ada = cluster.client(&nginx.address);
    let room = ada.signed_in_room().await;
    let page = ada.get(&format!("/rooms/{room}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let request_id = page.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 32, "nginx's $request_id reaches the app");
    let signed = signed_stream_in(&page.text().await.unwrap());

    // Both sockets upgrade through nginx, and the Origin check passes behind it.
    let mut cable = Cable::subscribed(&ada, &identifier(&signed)).await;
    let (_presence, _) = handshake(
        &ada,
        &format!("/rooms/{room}/presence"),
        Some(&nginx.address),
        None,
    )
    .await
    .expect("presence upgrades through nginx");
    let forged = handshake(&ada, "/cable", Some("http://evil.example"), None).await;
    assert!(forged.is_err(), "a foreign Origin is still refused");

    // Find the process holding the cable, and make a change on the other one.
    let mut holder = None;
    for (process, other) in [(&a, &b), (&b, &a)] {
        if process.up().await["cable"]["connections"] == 1 {
            holder = Some(other);
        }
    }
    let other = holder.expect("one process holds the cable socket");
    let grace = cluster.client(&other.address);
    grace.sign_in("Grace").await;
    grace.create_task(room, "Through the other process").await;
    let frame = cable.next().await;
    assert!(
        frame["message"]
            .as_str()
            .unwrap()
            .contains("Through the other process"),
        "{frame}"
    );

    // And a change posted through nginx reaches it too, whichever process takes the post.
    ada.create_task(room, "Through nginx").await;
    let frame = cable.next().await;
    assert!(
        frame["message"].as_str().unwrap().contains("Through nginx"),
        "{frame}"
    );
}
