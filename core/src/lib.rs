//! storefront-core: the sans-IO heart of Storefront.
#![forbid(unsafe_code)]

pub mod auth;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod exchange;
pub mod health;
pub mod outcome;
pub mod retry;
pub mod route;
pub mod s3;
pub mod time;
