//! The steps of one `mta send` session in their order (RFC 5321 §3: greeting, EHLO,
//! RFC 3207 STARTTLS and EHLO again, RFC 4954 AUTH, MAIL, RCPT, DATA, QUIT), each one a
//! possible `--quit-after` stop and each failure a [`Failure`] of its [`Phase`].

use clap::ValueEnum as _;

use super::auth::{self, Mechanism};
use super::dialogue::{Conn, Extensions, Failure, Phase, Reply, ok};
use super::{Login, Plan, QuitAfter, TlsMode};

/// Ends the session at `step` if `--quit-after` says so: QUIT, and exit 0.
async fn stop_here(plan: &Plan, conn: &mut Conn, step: QuitAfter) -> Option<u8> {
    if plan.quit_after != Some(step) {
        return None;
    }
    let name = step
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    conn.note(&format!("stopping after {name} (--quit-after)"));
    conn.quit().await;
    println!("stopped after {name} (--quit-after)");
    Some(0)
}

/// The dialogue; `Ok` with the exit code once it ran to its end (or its `--quit-after`).
pub(super) async fn run(plan: &Plan) -> Result<u8, Failure> {
    let mut conn = Conn::connect(&plan.host, plan.port, plan.timeout, plan.transcript).await?;
    let tls_config = || {
        plan.tls_config
            .clone()
            .expect("a TLS mode has a TLS config")
    };
    if plan.tls == TlsMode::Implicit {
        conn.start_tls(tls_config(), &plan.tls_name, true).await?;
    }
    let greeting = conn.reply(Phase::Greeting, "greeting").await.map_err(|f| {
        if plan.tls == TlsMode::Implicit || !f.message.starts_with("no greeting") {
            return f;
        }
        Failure {
            message: format!(
                "{}: if this port expects TLS from the first byte (465), use --tls implicit",
                f.message
            ),
            ..f
        }
    })?;
    if greeting.code != 220 {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Greeting,
            message: format!("the server does not take mail now: {greeting}"),
        });
    }
    if let Some(code) = stop_here(plan, &mut conn, QuitAfter::Connect).await {
        return Ok(code);
    }
    // With implicit TLS the handshake came before the greeting.
    if plan.tls == TlsMode::Implicit
        && let Some(code) = stop_here(plan, &mut conn, QuitAfter::Starttls).await
    {
        return Ok(code);
    }
    let mut ext = ehlo(plan, &mut conn).await?;
    if let Some(code) = stop_here(plan, &mut conn, QuitAfter::Ehlo).await {
        return Ok(code);
    }
    if plan.tls == TlsMode::Starttls {
        starttls(plan, &mut conn, &ext).await?;
        if let Some(code) = stop_here(plan, &mut conn, QuitAfter::Starttls).await {
            return Ok(code);
        }
        // RFC 3207 §4.2: nothing learnt before TLS holds; ask again.
        ext = ehlo(plan, &mut conn).await?;
    }
    if let Some(l) = &plan.login {
        login(&mut conn, &ext, l).await?;
        if let Some(code) = stop_here(plan, &mut conn, QuitAfter::Auth).await {
            return Ok(code);
        }
    }
    transaction(plan, &mut conn, &ext).await
}

/// STARTTLS and the handshake (RFC 3207).
async fn starttls(plan: &Plan, conn: &mut Conn, ext: &Extensions) -> Result<(), Failure> {
    if !ext.has("STARTTLS") {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Tls,
            message: "the server does not offer STARTTLS here: use --tls implicit for a port \
                      that expects TLS at once (465), or --tls none for plaintext"
                .into(),
        });
    }
    let reply = conn
        .command("STARTTLS", Phase::Tls, "reply to STARTTLS")
        .await?;
    if reply.code != 220 {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Tls,
            message: format!("STARTTLS refused: {reply}"),
        });
    }
    let config = plan
        .tls_config
        .clone()
        .expect("a TLS mode has a TLS config");
    conn.start_tls(config, &plan.tls_name, false).await
}

/// EHLO, or HELO when EHLO is refused and nothing needs an extension.
async fn ehlo(plan: &Plan, conn: &mut Conn) -> Result<Extensions, Failure> {
    let reply = conn
        .command(&format!("EHLO {}", plan.helo), Phase::Ehlo, "reply to EHLO")
        .await?;
    if ok(&reply) {
        return Ok(Extensions::parse(&reply));
    }
    if plan.tls != TlsMode::Starttls && plan.login.is_none() && reply.code / 100 == 5 {
        let helo = conn
            .command(&format!("HELO {}", plan.helo), Phase::Ehlo, "reply to HELO")
            .await?;
        if ok(&helo) {
            return Ok(Extensions::parse(&Reply {
                code: helo.code,
                lines: Vec::new(),
            }));
        }
    }
    conn.quit().await;
    Err(Failure {
        phase: Phase::Ehlo,
        message: format!("EHLO refused: {reply}"),
    })
}

async fn login(conn: &mut Conn, ext: &Extensions, l: &Login) -> Result<(), Failure> {
    // RFC 4954 §4: a password in the clear is for a server on this machine only.
    if !conn.is_tls() && !conn.peer().ip().is_loopback() {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Auth,
            message: format!(
                "not sending the password in plaintext to {}: use --tls starttls or implicit",
                conn.peer()
            ),
        });
    }
    let offered = ext.auth();
    let has = |m: &str| offered.iter().any(|o| o == m);
    let mechanism = match l.mechanism {
        Some(m) => m,
        None if has("PLAIN") => Mechanism::Plain,
        None if has("LOGIN") => Mechanism::Login,
        None => {
            conn.quit().await;
            let what = if offered.is_empty() {
                "no AUTH at all".to_string()
            } else {
                format!("only {}", offered.join(" "))
            };
            return Err(Failure {
                phase: Phase::Auth,
                message: format!(
                    "the server offers {} here; mta send speaks PLAIN and LOGIN{}",
                    mta_core::text::terminal(&what, false),
                    if conn.is_tls() {
                        ""
                    } else {
                        " (many servers offer AUTH only after TLS)"
                    }
                ),
            });
        }
    };
    if let Err(f) = auth::auth(conn, mechanism, &l.user, &l.password).await {
        conn.quit().await;
        return Err(f);
    }
    Ok(())
}

/// The MAIL FROM parameters the message needs and the server offers.
fn mail_params(plan: &Plan, ext: &Extensions) -> String {
    let mut params = String::new();
    if plan.message.iter().any(|&b| b >= 0x80) && ext.has("8BITMIME") {
        params.push_str(" BODY=8BITMIME");
    }
    let utf8 = plan
        .from
        .iter()
        .chain(&plan.to)
        .any(|a| !a.to_string().is_ascii());
    if utf8 && ext.has("SMTPUTF8") {
        params.push_str(" SMTPUTF8");
    }
    params
}

/// RCPT TO for each recipient, each outcome printed; how many were accepted.
async fn recipients(plan: &Plan, conn: &mut Conn) -> Result<usize, Failure> {
    let mut accepted = 0;
    for to in &plan.to {
        let reply = conn
            .command(&format!("RCPT TO:<{to}>"), Phase::Rcpt, "reply to RCPT TO")
            .await?;
        if ok(&reply) {
            accepted += 1;
            println!("accepted <{to}>: {reply}");
        } else {
            println!("refused  <{to}>: {reply}");
        }
    }
    Ok(accepted)
}

/// MAIL, one RCPT per recipient with its result printed, DATA, the message.
async fn transaction(plan: &Plan, conn: &mut Conn, ext: &Extensions) -> Result<u8, Failure> {
    let params = mail_params(plan, ext);
    let from = plan
        .from
        .as_ref()
        .map_or_else(String::new, |a| a.to_string());
    let reply = conn
        .command(
            &format!("MAIL FROM:<{from}>{params}"),
            Phase::Mail,
            "reply to MAIL FROM",
        )
        .await?;
    if !ok(&reply) {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Mail,
            message: format!("sender <{from}> refused: {reply}"),
        });
    }
    if let Some(code) = stop_here(plan, conn, QuitAfter::Mail).await {
        return Ok(code);
    }
    let accepted = recipients(plan, conn).await?;
    if accepted == 0 {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Rcpt,
            message: "every recipient was refused; nothing sent".into(),
        });
    }
    if let Some(code) = stop_here(plan, conn, QuitAfter::Rcpt).await {
        return Ok(if accepted == plan.to.len() { code } else { 30 });
    }
    let reply = conn.command("DATA", Phase::Data, "reply to DATA").await?;
    if reply.code != 354 {
        conn.quit().await;
        return Err(Failure {
            phase: Phase::Data,
            message: format!("DATA refused: {reply}"),
        });
    }
    if plan.quit_after == Some(QuitAfter::Data) {
        conn.note("closing the connection without the message (--quit-after data)");
        println!("stopped after data (--quit-after): connection closed without the message");
        return Ok(0);
    }
    conn.data(&plan.message).await?;
    let reply = conn.reply(Phase::Message, "reply to the message").await?;
    conn.quit().await;
    if !ok(&reply) {
        return Err(Failure {
            phase: Phase::Message,
            message: format!("message refused: {reply}"),
        });
    }
    println!(
        "sent to {accepted} of {} recipient{}: {reply}",
        plan.to.len(),
        if plan.to.len() == 1 { "" } else { "s" }
    );
    Ok(if accepted == plan.to.len() { 0 } else { 30 })
}
