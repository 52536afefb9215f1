//! A small HTTP client for the gateway suites, on hyper (the silo's own
//! HTTP stack): one kept-alive connection, HTTP/1.1 or HTTP/2, answers
//! read whole with their status, headers and JSON body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

enum Sender {
    One(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Two(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One connection to a silo's gateway.
pub struct Http {
    address: String,
    sender: Sender,
}

/// What the gateway answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON (`null` when empty).
    pub json: Value,
}

impl Answer {
    /// The `error.kind` of an error body, checking its shape.
    pub fn kind(&self) -> &str {
        let error = &self.json["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error without a message: {}",
            self.json
        );
        error["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.json))
    }
}

impl Http {
    /// An HTTP/1.1 connection (kept alive) to `address`.
    pub async fn connect(address: &str) -> Http {
        let stream = TcpStream::connect(address)
            .await
            .expect("the gateway accepts");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Http {
            address: address.to_string(),
            sender: Sender::One(sender),
        }
    }

    /// An HTTP/2 connection (prior knowledge, no TLS) to `address`.
    pub async fn connect_h2(address: &str) -> Http {
        let stream = TcpStream::connect(address)
            .await
            .expect("the gateway accepts");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        Http {
            address: address.to_string(),
            sender: Sender::Two(sender),
        }
    }

    /// A TLS connection to `address` (its certificate for `localhost`),
    /// HTTP/2 if the silo picks `h2` from what `connector` offers by ALPN,
    /// else HTTP/1.1; says which.
    pub async fn connect_tls(
        address: &str,
        connector: &tokio_rustls::TlsConnector,
    ) -> (Http, &'static str) {
        let stream = TcpStream::connect(address)
            .await
            .expect("the gateway accepts");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let h2 = session.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(session);
        let (sender, version) = if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            (Sender::Two(sender), "h2")
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            (Sender::One(sender), "http/1.1")
        };
        let http = Http {
            address: address.to_string(),
            sender,
        };
        (http, version)
    }

    /// `method path` with `headers` and `body`; panics if the connection
    /// breaks (the gateway must answer every request).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.as_str());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = match &mut self.sender {
            Sender::One(sender) => {
                sender.ready().await.expect("the connection stays open");
                sender.send_request(request).await
            }
            Sender::Two(sender) => {
                sender.ready().await.expect("the connection stays open");
                sender.send_request(request).await
            }
        }
        .unwrap_or_else(|e| panic!("no answer to {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{path}: the body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    /// `method path` answered with its status, content type and body as
    /// text (for answers that are not JSON).
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.as_str());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = match &mut self.sender {
            Sender::One(sender) => sender.send_request(request).await,
            Sender::Two(sender) => sender.send_request(request).await,
        }
        .unwrap_or_else(|e| panic!("no answer to {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// `POST path` with a JSON text body and `headers`.
    pub async fn post(&mut self, path: &str, headers: &[(&str, &str)], json: &str) -> Answer {
        self.request(Method::POST, path, headers, json.to_string())
            .await
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Value,
}

/// The events of a `GET` answered as an event stream, read as they come.
pub struct SseStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl SseStream {
    /// Opens `path` on `address` (a new connection) and checks that the
    /// answer is an event stream.
    pub async fn open(address: &str, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let stream = TcpStream::connect(address)
            .await
            .expect("the gateway accepts");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", address)
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseStream {
            body: response.into_body(),
            buffer: Vec::new(),
            _sender: sender,
        }
    }

    /// The next event that is not a keep-alive comment; `None` when the
    /// stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("events are text");
                let (mut event, mut id, mut data) = (None, None, String::new());
                for line in text.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() && event.is_none() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(SseEvent { event, id, data });
            }
            let frame = self.body.frame().await?.expect("the stream reads");
            if let Ok(chunk) = frame.into_data() {
                self.buffer.extend_from_slice(&chunk);
            }
        }
    }
}
