//! The endpoints: the route table, answers to plain requests, the browser
//! console, the connect
//! endpoints (authorize and describe an upgrade), the publish and device
//! status endpoints, the history API, and what clients may say over their WebSocket.

pub mod client_msg;
pub mod connect;
pub mod console;
pub mod history;
pub mod publish;
pub mod refusal;
pub mod respond;
pub mod route;
pub mod since;
