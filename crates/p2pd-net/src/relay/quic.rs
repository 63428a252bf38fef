//! QUIC over a relayed path: the reliable, ordered, congestion-controlled
//! stream a TURN relay's datagrams carry (quinn, on any
//! [`AsyncUdpSocket`]).
//!
//! QUIC's TLS here protects the transport only: each endpoint makes a
//! throwaway self-signed certificate and the client accepts any. Who is on
//! the other end is proved afterwards by the connection handshake that runs
//! over the stream, with the keys of the node IDs, as on every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use quinn::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use quinn::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use quinn::rustls::{self, DigitallySignedStruct, SignatureScheme};
use quinn::{
    AsyncUdpSocket, Connection, Endpoint, EndpointConfig, RecvStream, SendStream, TokioRuntime,
    TransportConfig, VarInt,
};

use super::RelayError;

/// The ALPN both ends name.
const ALPN: &[u8] = b"p2pd-relay/1";
/// The server name the client names (any; the certificate is not checked).
const SERVER_NAME: &str = "p2pd";
/// A relayed connection with no packet for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keeps the NAT mappings to the relay open while nothing is sent.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Flow-control windows: enough for a fast stream over a short path.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;

/// ring, not aws-lc-rs: it builds without cmake and in a fraction of the
/// time. rustls deprecates ring's provider for lacking post-quantum key
/// exchange; this layer only carries the stream, whose confidentiality
/// against a recording adversary comes from the connection handshake's own
/// encryption (`[connect] encrypt`).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("30 s is a valid idle timeout"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        // One each way: the splice's "every byte delivered".
        .max_concurrent_uni_streams(VarInt::from_u32(1))
        .max_concurrent_bidi_streams(VarInt::from_u32(1));
    Arc::new(transport)
}

/// A QUIC endpoint on `socket` that opens connections (the initiator's).
pub fn client(socket: Arc<dyn AsyncUdpSocket>) -> Result<Endpoint, RelayError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(quic)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(quic)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let mut endpoint = Endpoint::new_with_abstract_socket(
        EndpointConfig::default(),
        None,
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(quic)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A QUIC endpoint on `socket` that accepts connections (the responder's).
pub fn server(socket: Arc<dyn AsyncUdpSocket>) -> Result<Endpoint, RelayError> {
    let certified =
        rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(quic)?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(quic)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .map_err(quic)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(quic)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Endpoint::new_with_abstract_socket(
        EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(quic)
}

/// A connection to `peer` and its one stream.
pub async fn open(
    endpoint: &Endpoint,
    peer: SocketAddr,
) -> Result<(Connection, SendStream, RecvStream), RelayError> {
    let connection = endpoint
        .connect(peer, SERVER_NAME)
        .map_err(quic)?
        .await
        .map_err(quic)?;
    let (send, recv) = connection.open_bi().await.map_err(quic)?;
    Ok((connection, send, recv))
}

/// The connection from `peer` and its one stream (which shows once the
/// peer writes on it). Connections from elsewhere are refused.
pub async fn accept(
    endpoint: &Endpoint,
    peer: SocketAddr,
) -> Result<(Connection, SendStream, RecvStream), RelayError> {
    loop {
        let incoming = endpoint
            .accept()
            .await
            .ok_or_else(|| quic("the endpoint closed"))?;
        if incoming.remote_address() != peer {
            incoming.refuse();
            continue;
        }
        let connection = incoming.await.map_err(quic)?;
        let (send, recv) = connection.accept_bi().await.map_err(quic)?;
        return Ok((connection, send, recv));
    }
}

fn quic(err: impl std::fmt::Display) -> RelayError {
    RelayError::Quic(err.to_string())
}

/// Accepts any certificate: see the module docs for why that is safe here.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
