//! A minimal hand-rolled Postgres frontend for what real clients will not do:
//! vanish mid-COPY, send oversized messages, and read the transaction status
//! byte of ReadyForQuery.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: its type byte and body.
#[derive(Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// For 'E' (ErrorResponse): the field with the given code ('C' = SQLSTATE, 'M' = message).
    pub fn error_field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut i = 0;
        while i < self.body.len() && self.body[i] != 0 {
            let c = self.body[i];
            let end = i + 1 + self.body[i + 1..].iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&self.body[i + 1..end]).into_owned());
            }
            i = end + 1;
        }
        None
    }
}

pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    /// Connect and complete a trust-auth startup; returns after ReadyForQuery.
    pub async fn connect(port: u16) -> std::io::Result<RawConn> {
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
        let mut c = RawConn { stream };
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        for kv in ["user", "provdb", "database", "provdb"] {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        c.stream.write_all(&msg).await?;
        let msgs = c.read_until_ready().await?;
        if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
            return Err(std::io::Error::other(format!(
                "startup failed: {:?}",
                e.error_field(b'M')
            )));
        }
        Ok(c)
    }

    pub async fn send(&mut self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let mut msg = vec![tag];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.stream.write_all(&msg).await
    }

    pub async fn query(&mut self, sql: &str) -> std::io::Result<()> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await
    }

    /// Read one message (10 s timeout).
    pub async fn read_msg(&mut self) -> std::io::Result<Msg> {
        tokio::time::timeout(Duration::from_secs(30), async {
            let tag = self.stream.read_u8().await?;
            let len = self.stream.read_u32().await? as usize;
            if !(4..=64 << 20).contains(&len) {
                return Err(std::io::Error::other(format!(
                    "bad backend message length {len}"
                )));
            }
            let mut body = vec![0; len - 4];
            self.stream.read_exact(&mut body).await?;
            Ok(Msg { tag, body })
        })
        .await
        .map_err(|_| std::io::Error::other("read timeout"))?
    }

    /// Read messages up to and including ReadyForQuery (at most 100k messages).
    pub async fn read_until_ready(&mut self) -> std::io::Result<Vec<Msg>> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let m = self.read_msg().await?;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return Ok(out);
            }
        }
        Err(std::io::Error::other("no ReadyForQuery"))
    }

    /// Run a simple query; returns (transaction status byte, first error SQLSTATE).
    pub async fn simple(&mut self, sql: &str) -> std::io::Result<(u8, Option<String>)> {
        self.query(sql).await?;
        let msgs = self.read_until_ready().await?;
        let status = msgs
            .last()
            .and_then(|m| m.body.first().copied())
            .unwrap_or(0);
        let err = msgs
            .iter()
            .find(|m| m.tag == b'E')
            .and_then(|m| m.error_field(b'C'));
        Ok((status, err))
    }
}
