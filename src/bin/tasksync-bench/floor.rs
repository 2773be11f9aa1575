//! The machine's floor for the WebSocket floods: a bare WebSocket server (tokio-tungstenite,
//! no session, no database, no hub) that speaks just enough of both protocols for the
//! benchmark's clients: a `welcome` on connect and a `confirm_subscription` for a subscribe on
//! `/cable`, a `presence_state` at once on any other path. It runs as a process of its own
//! (this same binary, started with `--floor-server`, on the runtime tasksync uses: tokio, one
//! worker thread per core), so flooding it with the same clients in the same run gives the
//! handshake time that the kernel, the runtime and the generator alone cost on this machine.

use std::{net::SocketAddr, process::Stdio};

use anyhow::{Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    net::{TcpSocket, TcpStream},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};

pub const SERVER_FLAG: &str = "--floor-server";

/// The server's side: run by `main` when the binary is started with [`SERVER_FLAG`]. Prints
/// its address on stdout, serves until stdin closes.
pub async fn server() -> Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    // The same backlog as tasksync's listener (`startup::listen`).
    let listener = socket.listen(4096)?;
    println!("{}", listener.local_addr()?);
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(stream));
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        result = accept => result,
        _ = stdin_closed => Ok(()),
    }
}

async fn serve(stream: TcpStream) {
    let mut path = String::new();
    // The error type is tungstenite's (`Callback`), not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        path = request.uri().path().to_owned();
        if let Some(protocol) = request.headers().get("Sec-WebSocket-Protocol") {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocol.clone());
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let first = if path == "/cable" {
        r#"{"type":"welcome"}"#
    } else {
        r#"{"type":"presence_state","people":[]}"#
    };
    if socket.send(Message::text(first)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message
            && text.contains("\"subscribe\"")
        {
            let confirm = r#"{"type":"confirm_subscription","identifier":""}"#;
            if socket.send(Message::text(confirm)).await.is_err() {
                return;
            }
        }
    }
}

/// A running floor server; stopped (stdin closed, then killed) on drop.
pub struct Floor {
    pub origin: String,
    child: Child,
}

impl Floor {
    pub async fn start() -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SERVER_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the floor server")?;
        let stdout = child.stdout.take().context("floor server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let addr: SocketAddr = line.trim().parse().context("floor server address")?;
        Ok(Self {
            origin: format!("http://{addr}"),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}
