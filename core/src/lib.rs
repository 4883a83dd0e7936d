//! storefront-core: the sans-IO heart of Storefront.
#![forbid(unsafe_code)]

pub mod balance;
pub mod config;
pub mod health;
pub mod outcome;
pub mod retry;
pub mod route;
pub mod s3;
pub mod time;
