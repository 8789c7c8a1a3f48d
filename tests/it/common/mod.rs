//! A minimal Kafka client for tests: encodes requests with kafka-protocol, speaks to an
//! in-process broker on an ephemeral port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ottla::broker::Broker;
use ottla::config::Config;
use ottla::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start(config: Config) -> TestBroker {
        TestBroker::start_with_clock(config, ottla::clock::Clock::system()).await
    }

    /// A broker whose deadlines all come from `clock`.
    pub async fn start_with_clock(config: Config, clock: ottla::clock::Clock) -> TestBroker {
        let config = Config {
            listen: vec!["127.0.0.1:0".into()],
            ..config
        };
        let server = Server::bind_with_clock(config, clock)
            .await
            .expect("broker binds");
        TestBroker::serve(server)
    }

    /// As [`TestBroker::start`], listening on 127.0.0.1 at the first port of `ports` that is
    /// free (tried from a place that depends on the process, so parallel runs spread), for
    /// runs that must keep their brokers to a port range.
    pub async fn start_in_ports(
        config: Config,
        ports: std::ops::RangeInclusive<u16>,
    ) -> TestBroker {
        let (first, count) = (*ports.start(), u32::from(ports.end() - ports.start()) + 1);
        let offset = std::process::id() % count;
        for i in 0..count {
            let port = first + ((offset + i) % count) as u16;
            let config = Config {
                listen: vec![format!("127.0.0.1:{port}")],
                ..config.clone()
            };
            match Server::bind(config).await {
                Ok(server) => return TestBroker::serve(server),
                Err(ottla::server::StartError::Bind { .. }) => continue,
                Err(e) => panic!("broker starts: {e}"),
            }
        }
        panic!("no free port in {ports:?}");
    }

    fn serve(server: Server) -> TestBroker {
        let addr = server.local_addrs()[0];
        let broker = server.broker();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestBroker {
            addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn memory() -> TestBroker {
        TestBroker::start(Config {
            memory: true,
            ..Config::default()
        })
        .await
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

/// Frames a request: size prefix, header, body.
pub fn encode_request<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    try_encode_request(req, version, correlation_id).expect("request encodes")
}

/// As [`encode_request`], `None` when the request cannot be encoded at `version`.
pub fn try_encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
) -> Option<Vec<u8>> {
    let api_key = ApiKey::try_from(R::KEY).expect("known key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ottla-test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .ok()?;
    req.encode(&mut buf, version).ok()?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Some(buf.to_vec())
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            correlation_id: 0,
        }
    }

    /// As [`Client::connect`], `None` when nothing accepts the connection.
    pub async fn try_connect(addr: SocketAddr) -> Option<Client> {
        Some(Client {
            stream: TcpStream::connect(addr).await.ok()?,
            correlation_id: 0,
        })
    }

    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.try_send(req, version).await.expect("response")
    }

    /// Sends a request; `None` if the broker closed the connection instead of answering.
    pub async fn try_send<R: Request>(&mut self, req: &R, version: i16) -> Option<R::Response> {
        self.correlation_id += 1;
        let frame = encode_request(req, version, self.correlation_id);
        self.stream.write_all(&frame).await.ok()?;
        let mut body = self.read_frame().await?;
        let api_key = ApiKey::try_from(R::KEY).expect("known key");
        let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .expect("response header");
        assert_eq!(
            header.correlation_id, self.correlation_id,
            "answers come in order"
        );
        Some(R::Response::decode(&mut body, version).expect("response decodes"))
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response frame; `None` when the connection is closed.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let len = (&len[..]).get_i32() as usize;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    }

    /// True once the broker has closed this connection (reads EOF within 5 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.into()))
}

/// A Produce request of one batch to one partition.
pub fn produce_request(
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    kafka_protocol::messages::ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// One v2 batch holding `values` (keys `k<i>`), as a producer would send it.
pub fn batch(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("batch encodes");
    buf.freeze()
}
