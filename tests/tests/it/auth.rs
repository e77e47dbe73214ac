//! Authentication (SCRAM-SHA-256 when a password is configured) and TLS.

use std::process::Command;

use crate::harness::{Server, ServerOptions, connect, sqlstate};
use crate::psql::psql_conn;

fn auth_server() -> Server {
    Server::start_with(ServerOptions {
        auth: Some(("scientist".into(), "s3cret-pw".into())),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_required_when_configured() {
    let server = auth_server();
    let base = format!(
        "host=127.0.0.1 port={} dbname=provdb connect_timeout=10",
        server.port
    );

    // right user and password: SCRAM-SHA-256 succeeds
    let c = connect(&format!("{base} user=scientist password=s3cret-pw"))
        .await
        .expect("right password must connect");
    let rows = c.simple_query("SELECT 1").await.expect("query after auth");
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );

    // wrong password: 28P01
    let e = connect(&format!("{base} user=scientist password=wrong"))
        .await
        .expect_err("wrong password must fail");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");

    // wrong user: refused too
    let e = connect(&format!("{base} user=intruder password=s3cret-pw"))
        .await
        .expect_err("wrong user must fail");
    assert!(
        matches!(sqlstate(&e).as_deref(), Some("28P01") | Some("28000")),
        "{e:?}"
    );

    // no password at all: refused (tokio-postgres reports a missing password
    // client-side once the server asks for one)
    let e = connect(&format!("{base} user=scientist"))
        .await
        .expect_err("missing password must fail");
    let msg = format!("{e:?}").to_lowercase();
    assert!(
        sqlstate(&e).is_some() || msg.contains("password"),
        "missing password error: {e:?}"
    );
}

#[test]
fn psql_authenticates_with_scram() {
    let server = auth_server();
    let conn = format!(
        "host=127.0.0.1 port={} user=scientist dbname=provdb",
        server.port
    );
    // without a password psql (no tty, -w) must fail
    let out = psql_conn(&conn, &["-w", "-c", "SELECT 1"], None);
    assert!(
        !out.status.success(),
        "psql without password succeeded: {out:?}"
    );
    // with it, it works
    let with_pw = format!("{conn} password=s3cret-pw");
    let out = psql_conn(&with_pw, &["-A", "-t", "-c", "SELECT 40 + 2"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let wrong = format!("{conn} password=nope");
    let out = psql_conn(&wrong, &["-c", "SELECT 1"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
}

#[test]
fn tls_connection_with_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_with(ServerOptions {
        tls: Some((cert.clone(), key.clone())),
        ..Default::default()
    });
    let conn = format!(
        "host=127.0.0.1 port={} user=provdb dbname=provdb sslmode=require",
        server.port
    );
    let out = psql_conn(
        &conn,
        &["-c", "\\conninfo", "-A", "-t", "-c", "SELECT 'over tls'"],
        None,
    );
    assert!(out.status.success(), "psql sslmode=require: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SSL connection"),
        "\\conninfo did not report SSL: {stdout}"
    );
    assert!(stdout.contains("over tls"), "{stdout}");
    // verify-ca against the self-signed certificate
    let conn_verify = format!(
        "host=127.0.0.1 port={} user=provdb dbname=provdb sslmode=verify-ca sslrootcert={}",
        server.port,
        cert.display()
    );
    let out = psql_conn(&conn_verify, &["-A", "-t", "-c", "SELECT 1"], None);
    assert!(out.status.success(), "psql sslmode=verify-ca: {out:?}");
}
