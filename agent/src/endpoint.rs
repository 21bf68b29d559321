//! Where and how to reach an instance's Redis: shared by the supervisor,
//! which knows it, and the modules that talk to Redis. A leaf module.

use std::net::IpAddr;

/// Where and how to reach an instance's Redis. Not `Debug`: it holds the password.
#[derive(Clone)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    pub password: String,
}
