//! A downstream for the forward worker: a hand-rolled HTTP/1.1 responder on 127.0.0.1:0
//! (keep-alive, Content-Length bodies) that records every request and answers as the
//! test's policy says.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Hold the request this long, then answer (a timeout test's slow downstream).
    After(Duration, u16),
}

#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// What the sink answered (or will answer, for `After`).
    pub status: u16,
}

impl Received {
    pub fn id(&self) -> &str {
        self.headers
            .get("webhook-id")
            .map(String::as_str)
            .unwrap_or("")
    }
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Policy = dyn Fn(&Received, usize) -> Answer + Send + Sync;

struct State {
    log: Mutex<Vec<Received>>,
    changed: watch::Sender<usize>,
    /// `(request, n)`: n is 1 for the first request with this webhook-id, 2 for the next...
    policy: Box<Policy>,
}

pub struct Sink {
    pub url: String,
    state: Arc<State>,
}

impl Sink {
    pub async fn start(
        policy: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            log: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            policy: Box::new(policy),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, st.clone()));
            }
        });
        Sink {
            url: format!("http://{addr}/hooks"),
            state,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Wait until `cond` holds over everything received so far.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let mut rx = self.state.changed.subscribe();
        let wait = async {
            loop {
                {
                    let log = self.state.log.lock().unwrap();
                    if cond(&log) {
                        return log.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    panic!("sink stopped");
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; sink got {} requests",
                    self.received().len()
                )
            })
    }
}

/// Check a request's Standard Webhooks signature with `secret` (`whsec_<base64>`),
/// computed here independently of the worker's code.
pub fn signature_valid(r: &Received, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let (Some(id), Some(ts), Some(sig)) = (
        r.headers.get("webhook-id"),
        r.headers.get("webhook-timestamp"),
        r.headers.get("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    // The header may hold several space-separated signatures.
    sig.split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut headers = HashMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + len;
        while buf.len() < total {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buf[head_end + 4..total].to_vec();
        buf.drain(..total);
        let mut req = Received {
            headers,
            body,
            status: 0,
        };
        let answer = {
            let mut log = state.log.lock().unwrap();
            let nth = log.iter().filter(|r| r.id() == req.id()).count() + 1;
            let answer = (state.policy)(&req, nth);
            req.status = match answer {
                Answer::Status(s) | Answer::After(_, s) => s,
            };
            log.push(req);
            answer
        };
        state.changed.send_modify(|n| *n += 1);
        let status = match answer {
            Answer::Status(s) => s,
            Answer::After(d, s) => {
                tokio::time::sleep(d).await;
                s
            }
        };
        let body = if (200..300).contains(&status) {
            "ok"
        } else {
            "nope"
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
