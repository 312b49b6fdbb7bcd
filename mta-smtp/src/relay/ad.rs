//! The other way to know that an answer is DNSSEC-validated (`outbound.dnssec = "resolver"`):
//! ask a validating resolver on loopback (unbound, dnsmasq `--dnssec`, systemd-resolved with
//! `DNSSEC=yes`) and trust its AD bit (RFC 4035 §3.2.3, RFC 6840 §5.7).
//!
//! The AD bit can be forged by anyone on the path between us and the resolver, so it is
//! trusted only from loopback addresses: the config is refused otherwise. Each query sets DO
//! and AD (a resolver sets AD in its answer only when asked, RFC 6840 §5.7), goes over UDP
//! with a 1232-octet EDNS buffer, and again over TCP when the answer is truncated. The
//! resolver caches; nothing is cached here. A validating resolver answers a bogus RRset with
//! SERVFAIL, which makes that lookup fail.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(4);
/// The EDNS buffer size (the DNS flag day 2020 value).
const PAYLOAD: u16 = 1232;

/// An answer from the resolver.
#[derive(Debug, Clone)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, SERVFAIL, …
    pub rcode: ResponseCode,
    /// The resolver validated it (the AD bit).
    pub authentic: bool,
    /// The answer section.
    pub records: Vec<Record>,
}

/// A stub resolver that asks the loopback resolvers in order.
#[derive(Debug, Clone)]
pub struct AdResolver {
    servers: Vec<SocketAddr>,
}

impl AdResolver {
    /// Asks `servers`, which must all be loopback addresses.
    ///
    /// # Errors
    /// When there is none, or one is not on loopback.
    pub fn new(servers: Vec<SocketAddr>) -> Result<AdResolver, String> {
        if servers.is_empty() {
            return Err("no name server to ask".into());
        }
        if let Some(far) = servers.iter().find(|s| !s.ip().is_loopback()) {
            return Err(format!(
                "name server {far} is not on loopback; the AD bit is trusted only from a \
                 resolver on this machine"
            ));
        }
        Ok(AdResolver { servers })
    }

    /// Asks for `name` `rtype`: the first server that answers decides.
    ///
    /// # Errors
    /// Why no server gave an answer.
    pub async fn ask(&self, name: &str, rtype: RecordType) -> Result<Answer, String> {
        let name = Name::from_ascii(name).map_err(|e| format!("{name:?}: {e}"))?;
        let mut last = String::new();
        for server in &self.servers {
            match ask_one(*server, &name, rtype).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last = format!("{server}: {e}"),
            }
        }
        Err(last)
    }
}

/// One question to one server: UDP, then TCP when the answer is truncated.
async fn ask_one(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Answer, String> {
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), rtype));
    query.metadata.recursion_desired = true;
    query.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true).set_max_payload(PAYLOAD);
    query.set_edns(edns);
    let wire = query.to_vec().map_err(|e| e.to_string())?;
    let id = query.metadata.id;
    let reply = tokio::time::timeout(TIMEOUT, udp(server, &wire, id, name, rtype))
        .await
        .map_err(|_| "no answer over UDP".to_string())??;
    let reply = match reply.metadata.truncation {
        true => tokio::time::timeout(TIMEOUT, tcp(server, &wire, id, name, rtype))
            .await
            .map_err(|_| "no answer over TCP".to_string())??,
        false => reply,
    };
    Ok(Answer {
        rcode: reply.metadata.response_code,
        authentic: reply.metadata.authentic_data,
        records: reply.answers,
    })
}

/// Whether `reply` answers our question (RFC 5452 §9.1: same id and question).
fn check(reply: Message, id: u16, name: &Name, rtype: RecordType) -> Result<Message, String> {
    let asked = reply
        .queries
        .first()
        .is_some_and(|q| q.name() == name && q.query_type() == rtype);
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response || !asked {
        return Err("an answer to another question".into());
    }
    Ok(reply)
}

async fn udp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> Result<Message, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(wire).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(PAYLOAD)];
    // Datagrams that answer something else are skipped; the caller's timeout bounds this.
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        if let Ok(reply) = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
            && let Ok(reply) = check(reply, id, name, rtype)
        {
            return Ok(reply);
        }
    }
}

async fn tcp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> Result<Message, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let reply = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    check(reply, id, name, rtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_to_our_question_counts() {
        let name = Name::from_ascii("_25._tcp.mx.example.test.").unwrap();
        let answer = |id: u16, qname: &Name, rtype: RecordType, kind: MessageType| {
            let mut m = Message::new(id, kind, hickory_resolver::proto::op::OpCode::Query);
            m.add_query(Query::query(qname.clone(), rtype));
            m
        };
        let ours = answer(7, &name, RecordType::TLSA, MessageType::Response);
        assert!(check(ours, 7, &name, RecordType::TLSA).is_ok());
        let other = Name::from_ascii("evil.test.").unwrap();
        for wrong in [
            answer(8, &name, RecordType::TLSA, MessageType::Response),
            answer(7, &other, RecordType::TLSA, MessageType::Response),
            answer(7, &name, RecordType::A, MessageType::Response),
            answer(7, &name, RecordType::TLSA, MessageType::Query),
        ] {
            assert!(check(wrong, 7, &name, RecordType::TLSA).is_err());
        }
    }

    #[test]
    fn only_loopback_resolvers_are_trusted() {
        assert!(AdResolver::new(vec!["127.0.0.53:53".parse().unwrap()]).is_ok());
        assert!(AdResolver::new(vec!["[::1]:53".parse().unwrap()]).is_ok());
        let err = AdResolver::new(vec![
            "127.0.0.1:53".parse().unwrap(),
            "192.0.2.53:53".parse().unwrap(),
        ])
        .unwrap_err();
        assert!(err.contains("192.0.2.53:53 is not on loopback"), "{err}");
        assert!(AdResolver::new(vec![]).is_err());
    }
}
