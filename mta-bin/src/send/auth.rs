//! RFC 4954 AUTH for `mta send`: PLAIN (RFC 4616, user and password in one response) and
//! LOGIN (each in its own response), with the responses hidden from the transcript.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::dialogue::{Conn, Failure, Phase, Reply, fail, ok};

/// SASL mechanisms `mta send` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    /// RFC 4616: user and password in one response.
    Plain,
    /// The LOGIN mechanism: user and password in two responses.
    Login,
}

/// AUTH as `user` with `mechanism`, the responses hidden from the transcript.
pub async fn auth(
    conn: &mut Conn,
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> Result<Reply, Failure> {
    let reply = match mechanism {
        Mechanism::Plain => {
            let token = B64.encode(format!("\0{user}\0{password}"));
            conn.send(
                &format!("AUTH PLAIN {token}"),
                "AUTH PLAIN <redacted>",
                Phase::Auth,
            )
            .await?;
            conn.reply(Phase::Auth, "reply to AUTH").await?
        }
        Mechanism::Login => {
            let mut reply = conn
                .command("AUTH LOGIN", Phase::Auth, "reply to AUTH")
                .await?;
            for secret in [user, password] {
                if reply.code != 334 {
                    break;
                }
                conn.send(&B64.encode(secret), "<redacted>", Phase::Auth)
                    .await?;
                reply = conn.reply(Phase::Auth, "reply to AUTH").await?;
            }
            reply
        }
    };
    if ok(&reply) {
        Ok(reply)
    } else {
        fail(Phase::Auth, format!("login refused: {reply}"))
    }
}
