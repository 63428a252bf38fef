//! The connection handshake over loopback TCP: who may connect as whom,
//! encrypted and plain streams through the Pipe API, plain and original
//! P2PD clients, fragmentation and tampering.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::handshake::{Acceptor, Asking, HandshakeFailed, dial};
use p2pd_net::pipe::{Pipe, PipeConfig, Protocol, SubKey};
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::handshake::record::{MAX_PLAINTEXT, Sealer};
use p2pd_proto::handshake::{Finished, HandshakeError, Hello, Initiator};
use p2pd_proto::signal::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const LIMIT: Duration = Duration::from_secs(5);

fn alice() -> Identity {
    Identity::from_secret([1; 32])
}

fn bob() -> Identity {
    Identity::from_secret([2; 32])
}

fn asking(encrypt: bool) -> Asking {
    Asking {
        encrypt,
        token: None,
        limit: LIMIT,
    }
}

/// A server greeting as `who`; every connection it adopts is sent on the
/// channel, and every message echoed back.
async fn server(who: Identity, encrypt: bool) -> (Pipe, mpsc::UnboundedReceiver<Pipe>) {
    let server = Pipe::listen(Protocol::Tcp, V4, &PipeConfig::default())
        .await
        .expect("listen");
    server.set_greeter(Arc::new(Acceptor::new(who, encrypt, LIMIT)).greeter());
    let (tx, rx) = mpsc::unbounded_channel();
    server.add_accept_cb(move |conn| {
        let _ = tx.send(conn.clone());
    });
    server.add_msg_cb(|msg, conn| async move {
        let _ = conn.send(&msg.data, None).await;
    });
    (server, rx)
}

/// Alice dials `dest` expecting Bob there.
async fn alice_dials_bob(dest: SocketAddr, asking: Asking) -> Result<Pipe, HandshakeFailed> {
    dial(
        dest,
        None,
        &PipeConfig::default(),
        (&alice(), &bob().id()),
        asking,
        None,
    )
    .await
}

/// A Hello sent now.
fn hello_now(encrypt: bool, token: Option<ReverseToken>) -> Hello {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    Hello {
        encrypt,
        sent_ms: u64::try_from(now.as_millis()).expect("ms fit"),
        token,
    }
}

/// The next `n` bytes the server sends back, within the limit.
async fn read_back(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut back = vec![0u8; n];
    tokio::time::timeout(LIMIT, sock.read_exact(&mut back))
        .await
        .expect("echoed")
        .expect("read");
    back
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Pipe>) -> Pipe {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("a connection is adopted")
        .expect("channel open")
}

#[tokio::test]
async fn each_side_knows_the_other_and_messages_flow_encrypted_or_plain() {
    for (mine, theirs) in [(true, true), (true, false), (false, true), (false, false)] {
        let (server, mut adopted) = server(bob(), theirs).await;
        let client = alice_dials_bob(server.local_addr(), asking(mine))
            .await
            .expect("dial");
        let conn = next(&mut adopted).await;
        let theirs_seen = conn.authenticated().expect("authenticated");
        assert_eq!(theirs_seen.id, alice().id());
        assert_eq!(theirs_seen.encrypted, mine || theirs);
        let mine_seen = client.authenticated().expect("authenticated");
        assert_eq!(mine_seen.id, bob().id());
        assert_eq!(mine_seen.encrypted, mine || theirs);
        client.subscribe(&SubKey::all()).expect("subscribe");
        let big = vec![7u8; 200_000];
        client.send(&big, None).await.expect("send");
        let mut got = Vec::new();
        while got.len() < big.len() {
            let msg = client.recv(&SubKey::all(), WAIT).await.expect("echo");
            got.extend_from_slice(&msg.data);
        }
        assert_eq!(got, big);
        client.close().await;
        server.close().await;
    }
}

#[tokio::test]
async fn an_encrypted_connection_is_a_byte_stream_too() {
    let (server, _adopted) = server(bob(), true).await;
    let client = alice_dials_bob(server.local_addr(), asking(true))
        .await
        .expect("dial");
    let mut stream = client.stream().expect("stream");
    stream
        .write_all(b"through the records")
        .await
        .expect("write");
    let mut back = [0u8; 19];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("echoed")
        .expect("read");
    assert_eq!(&back, b"through the records");
}

#[tokio::test]
async fn a_node_with_another_key_is_not_the_peer() {
    let carol = Identity::from_secret([9; 32]);
    let (server, _adopted) = server(carol, true).await;
    let err = alice_dials_bob(server.local_addr(), asking(true))
        .await
        .expect_err("carol cannot answer for bob");
    assert!(err.to_string().contains("not the peer"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_no_p2pd_node_is_not_the_peer() {
    // One that answers with its own protocol, one that says nothing and
    // closes, one that says nothing at all.
    for behaviour in 0..3 {
        let listener = TcpListener::bind(V4).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            match behaviour {
                0 => {
                    let _ = sock.write_all(b"\x20\x02\x00\x00 CONNACK-ish").await;
                    tokio::time::sleep(LIMIT).await;
                }
                1 => {}
                _ => tokio::time::sleep(LIMIT).await,
            }
        });
        let err = alice_dials_bob(
            addr,
            Asking {
                limit: Duration::from_millis(300),
                ..asking(true)
            },
        )
        .await
        .expect_err("no p2pd node there");
        let expected = match behaviour {
            0 => matches!(err, HandshakeFailed::Refused(HandshakeError::NotThePeer)),
            1 => matches!(err, HandshakeFailed::Ended),
            _ => matches!(err, HandshakeFailed::Timeout(_)),
        };
        assert!(expected, "behaviour {behaviour}: {err:?}");
        assert!(err.to_string().starts_with("not the peer"), "{err}");
    }
}

#[tokio::test]
async fn a_plain_client_is_anonymous_and_keeps_its_first_bytes() {
    let (server, mut adopted) = server(bob(), true).await;
    let mut sock = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    sock.write_all(b"ECHO hi").await.expect("write");
    let conn = next(&mut adopted).await;
    assert_eq!(conn.authenticated(), None);
    let back = read_back(&mut sock, 7).await;
    assert_eq!(back, b"ECHO hi");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_taken_as_plain_after_the_undecided_wait() {
    let (server, mut adopted) = server(bob(), true).await;
    let _sock = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let started = tokio::time::Instant::now();
    let conn = next(&mut adopted).await;
    assert_eq!(conn.authenticated(), None);
    assert!(started.elapsed() >= p2pd_net::handshake::UNDECIDED);
}

#[tokio::test]
async fn an_original_nodes_first_line_is_consumed() {
    let (server, mut adopted) = server(bob(), true).await;
    let mut sock = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    sock.write_all(b"P2P_CON_ID_EQ 123456\nECHO hi")
        .await
        .expect("write");
    let conn = next(&mut adopted).await;
    assert_eq!(conn.authenticated(), None);
    let back = read_back(&mut sock, 7).await;
    assert_eq!(back, b"ECHO hi", "the line is not echoed, the rest is");
}

/// A handshake by hand, one byte per write, then the stream's records.
#[tokio::test]
async fn a_handshake_sent_one_byte_at_a_time_succeeds_and_a_forged_record_ends_it() {
    let (server, mut adopted) = server(bob(), false).await;
    let mut sock = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let hello = hello_now(true, Some(ReverseToken::from_random(42)));
    let (mut initiator, first) =
        Initiator::start(&alice(), &bob().id(), hello, [5; 32]).expect("start");
    for byte in &first {
        sock.write_all(std::slice::from_ref(byte))
            .await
            .expect("write");
    }
    let finished = read_answer(&mut sock, &mut initiator).await;
    // Not a connection until the confirmation, sent one byte at a time too.
    for byte in &finished.confirm {
        sock.write_all(std::slice::from_ref(byte))
            .await
            .expect("write");
    }
    let conn = next(&mut adopted).await;
    let seen = conn.authenticated().expect("authenticated");
    assert_eq!(seen.token, Some(ReverseToken::from_random(42)));
    assert!(seen.encrypted);
    let (mut sealer, mut opener) = finished.session.into_keys().expect("encrypted");
    let mut buf = [0u8; 512];
    let mut record = Vec::new();
    sealer.seal(b"ping", &mut record).expect("seal");
    sock.write_all(&record).await.expect("write");
    let n = tokio::time::timeout(LIMIT, sock.read(&mut buf))
        .await
        .expect("echo")
        .expect("read");
    let mut plain = Vec::new();
    opener.open(&buf[..n], &mut plain).expect("open");
    assert_eq!(plain, b"ping");
    // A record no sealer made: the server ends the connection.
    sock.write_all(&[
        0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ])
    .await
    .expect("write");
    tokio::time::timeout(LIMIT, conn.closed())
        .await
        .expect("the forged record ends the connection");
}

/// Reads the server's answer until it is whole and proves Bob.
async fn read_answer(sock: &mut TcpStream, initiator: &mut Initiator) -> Finished {
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::time::timeout(LIMIT, sock.read(&mut buf))
            .await
            .expect("answer")
            .expect("read");
        assert!(n > 0, "the server closed");
        if let Some(done) = initiator.read(&buf[..n]).expect("the answer proves bob") {
            return done;
        }
    }
}

/// Records cut anywhere by the writes, the first ones arriving with the
/// key confirmation (what the handshake reads past its end), reach the
/// application whole and in order: the server's echo opens to the same
/// bytes.
#[tokio::test]
async fn records_cut_anywhere_arrive_whole_and_in_order() {
    let (server, _adopted) = server(bob(), true).await;
    let mut sock = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let (mut initiator, first) =
        Initiator::start(&alice(), &bob().id(), hello_now(true, None), [6; 32]).expect("start");
    sock.write_all(&first).await.expect("write");
    let finished = read_answer(&mut sock, &mut initiator).await;
    let (mut sealer, mut opener) = finished.session.into_keys().expect("encrypted");
    let data: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
    let mut wire = finished.confirm.clone();
    sealer.seal(&data[..10], &mut wire).expect("seal");
    sealer.seal(&data[10..], &mut wire).expect("seal");
    // The confirmation, a whole record and the start of the next at once.
    let at_once = finished.confirm.len() + Sealer::sealed_len(10) + 5;
    sock.write_all(&wire[..at_once]).await.expect("write");
    let mut rest = &wire[at_once..];
    for cut in [1, 7, 3000, MAX_PLAINTEXT + 20, 2].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*cut).min(rest.len()));
        sock.write_all(piece).await.expect("write");
        rest = tail;
    }
    let mut echoed = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while echoed.len() < data.len() {
        let n = tokio::time::timeout(LIMIT, sock.read(&mut buf))
            .await
            .expect("echo")
            .expect("read");
        assert!(n > 0, "the server closed");
        opener.open(&buf[..n], &mut echoed).expect("open");
    }
    assert_eq!(echoed, data);
}

/// A first message seen on the wire and played on another connection
/// first: answered, but never a connection, since the player cannot
/// confirm the keys; the genuine one, arriving second, is then a replay.
#[tokio::test]
async fn a_first_message_played_by_an_eavesdropper_opens_nothing() {
    let (server, mut adopted) = server(bob(), false).await;
    let hello = hello_now(false, Some(ReverseToken::from_random(7)));
    let (_, first) = Initiator::start(&alice(), &bob().id(), hello, [7; 32]).expect("start");
    let mut eve = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    eve.write_all(&first).await.expect("write");
    let mut buf = [0u8; 512];
    assert!(eve.read(&mut buf).await.expect("answer") > 0, "answered");
    eve.write_all(b"\x00\x10plain bytes as alice")
        .await
        .expect("write");
    let n = tokio::time::timeout(LIMIT, eve.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "no confirmation: the connection is closed");
    // A greeting that ends in a close adopts nothing (adoption would have
    // come first, and kept the connection open).
    assert!(adopted.try_recv().is_err(), "never adopted");
}

#[tokio::test]
async fn a_replayed_first_message_is_dropped() {
    let (server, mut adopted) = server(bob(), false).await;
    let hello = hello_now(false, None);
    let (mut initiator, first) =
        Initiator::start(&alice(), &bob().id(), hello, [6; 32]).expect("start");
    let mut genuine = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    genuine.write_all(&first).await.expect("write");
    let mut buf = [0u8; 512];
    let n = genuine.read(&mut buf).await.expect("answer");
    let finished = initiator
        .read(&buf[..n])
        .expect("bob answers")
        .expect("whole");
    genuine.write_all(&finished.confirm).await.expect("confirm");
    assert!(next(&mut adopted).await.authenticated().is_some());
    let mut replay = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    replay.write_all(&first).await.expect("write");
    let n = tokio::time::timeout(LIMIT, replay.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to a replay: the connection is closed");
}
