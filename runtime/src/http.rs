//! placeholder
use crate::driver::Driver;
use crate::net::Net;
use std::sync::Arc;
pub async fn serve<N: Net>(_driver: Arc<Driver<N>>, _listener: N::Listener) {}
pub async fn serve_https_placeholder<N: Net>(_driver: Arc<Driver<N>>, _listener: N::Listener) {}
