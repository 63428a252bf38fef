//! Building Noise handshake states from node identities, with ephemeral
//! keys drawn from a seed the caller gives (proto draws no randomness).

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use super::{HandshakeError, PATTERN};
use crate::addr::NodeId;
use crate::signal::Identity;

/// The initiator's state: it knows the responder's key.
pub(super) fn initiator(
    me: &Identity,
    peer: &NodeId,
    seed: [u8; 32],
) -> Result<HandshakeState, HandshakeError> {
    let secret = me.secret_bytes();
    Ok(builder(seed)?
        .local_private_key(&secret)?
        .remote_public_key(&peer.0)?
        .build_initiator()?)
}

/// The responder's state: it learns the initiator's key.
pub(super) fn responder(me: &Identity, seed: [u8; 32]) -> Result<HandshakeState, HandshakeError> {
    let secret = me.secret_bytes();
    Ok(builder(seed)?
        .local_private_key(&secret)?
        .build_responder()?)
}

fn builder<'a>(seed: [u8; 32]) -> Result<Builder<'a>, HandshakeError> {
    let params = PATTERN.parse()?;
    Ok(Builder::with_resolver(params, Box::new(Seeded(seed))))
}

/// snow's own primitives, with the random numbers from a seed.
struct Seeded([u8; 32]);

impl CryptoResolver for Seeded {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(StdRng::from_seed(self.0))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct SeededRandom(StdRng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}
