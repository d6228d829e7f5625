//! Who may do what: token verification and the API key, token claims and
//! offline minting, and admission (connection and socket limits) as guards
//! that give their place back on every exit path.

pub mod admission;
pub mod token;
pub mod verify;
