//! The machine's floor for the WebSocket floods: the least a WebSocket server can do. It reads
//! the upgrade request, answers 101 with the accept key and the first message (`welcome` on
//! `/cable`, an empty `presence_state` elsewhere) in one write, and answers a subscribe with a
//! `confirm_subscription`: no session, no database, no hub, no WebSocket library, only bytes
//! formatted here. It runs as a process of its own (this same binary, started with
//! `--floor-server`, on the runtime tasksync uses: tokio, one worker thread per core), so
//! flooding it with the same clients in the same run gives the handshake time that the kernel's
//! TCP, the runtime and the generator alone cost on this machine.

use std::{net::SocketAddr, process::Stdio};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpSocket, TcpStream},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::{
    handshake::derive_accept_key,
    protocol::frame::coding::{Control, Data, OpCode},
};

use crate::ws::{frame, header, read_more};

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
            // A client that breaks the protocol only ends its own connection.
            tokio::spawn(async move { serve(stream).await.ok() });
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

const TEXT: OpCode = OpCode::Data(Data::Text);
/// What marks a client's frame as a subscribe command.
const SUBSCRIBE: &[u8] = br#""subscribe""#;

async fn serve(mut stream: TcpStream) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(length) = request.parse(&buf)? else {
            continue;
        };
        let key = header(request.headers, "Sec-WebSocket-Key").context("no key")?;
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            derive_accept_key(key)
        );
        // The clients ask for one protocol at most: agree to it.
        if let Some(protocol) = header(request.headers, "Sec-WebSocket-Protocol") {
            answer += &format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                std::str::from_utf8(protocol)?
            );
        }
        answer += "\r\n";
        let first: &[u8] = if request.path == Some("/cable") {
            br#"{"type":"welcome"}"#
        } else {
            br#"{"type":"presence_state","people":[]}"#
        };
        let mut out = answer.into_bytes();
        out.extend(frame::encode(TEXT, first, None));
        stream.write_all(&out).await?;
        buf.drain(..length);
        break;
    }
    loop {
        while let Some((opcode, payload)) = frame::take(&mut buf)? {
            match opcode {
                TEXT if payload.windows(SUBSCRIBE.len()).any(|w| w == SUBSCRIBE) => {
                    let confirm = br#"{"type":"confirm_subscription","identifier":""}"#;
                    stream
                        .write_all(&frame::encode(TEXT, confirm, None))
                        .await?;
                }
                OpCode::Control(Control::Close) => return Ok(()),
                _ => {}
            }
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Ok(());
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

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::ws;

    /// The generator's clients against the floor server's `serve`: both handshakes complete,
    /// and the sockets they return go on speaking WebSocket (through tungstenite).
    #[tokio::test]
    async fn the_generators_clients_open_both_sockets_on_the_floor_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream));
            }
        });
        const WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
        use tokio::time::timeout as within;
        let mut cable = within(
            WITHIN,
            ws::cable(&origin, "a=b", &ws::identifier("s"), None),
        )
        .await
        .expect("confirmed within 5 s")
        .unwrap()
        .into_socket()
        .await;
        let subscribe = r#"{"command":"subscribe","identifier":"again"}"#;
        cable.send(Message::text(subscribe)).await.unwrap();
        let confirm = cable.next().await.unwrap().unwrap();
        assert!(confirm.to_text().unwrap().contains("confirm_subscription"));
        within(WITHIN, ws::presence(&origin, "a=b", 1, None))
            .await
            .expect("presence_state within 5 s")
            .unwrap();
    }
}
