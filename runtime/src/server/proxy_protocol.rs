//! PROXY protocol v2 from trusted load balancers: a connection from an address in
//! `server.proxy_protocol_from` must begin with a PROXY v2 header (parsed by the `ppp` crate),
//! and its source address, not the load balancer's, is the caller's peer address. Connections
//! from anywhere else are never parsed for one, so a client cannot claim an address.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The fixed part of a v2 header: 12-byte signature, version/command, family, length.
const FIXED: usize = 16;
/// The v2 signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest address block accepted (UNIX addresses are the largest, 216 bytes, plus TLVs).
const ADDRESSES_MAX: usize = 1024;

/// A stream whose first bytes were read ahead: they are read again before the rest.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, with `prefix` in front of what it yields.
    pub fn new(inner: T, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Read a PROXY v2 header from `io`: the source address it carries (none for a `LOCAL`
/// connection, such as the load balancer's own health check, or an unspecified family), and
/// the bytes read past it.
pub async fn read_header<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(Option<SocketAddr>, Bytes)> {
    let mut buffer = BytesMut::with_capacity(512);
    while buffer.len() < FIXED {
        if io.read_buf(&mut buffer).await? == 0 {
            return Err(invalid("the connection closed before its PROXY header"));
        }
    }
    if buffer[..12] != SIGNATURE {
        return Err(invalid(
            "a trusted load balancer's connection must start with a PROXY v2 header",
        ));
    }
    let length = usize::from(u16::from_be_bytes([buffer[14], buffer[15]]));
    if length > ADDRESSES_MAX {
        return Err(invalid("PROXY v2 address block too long"));
    }
    while buffer.len() < FIXED + length {
        if io.read_buf(&mut buffer).await? == 0 {
            return Err(invalid("the connection closed inside its PROXY header"));
        }
    }
    let rest = buffer.split_off(FIXED + length).freeze();
    let header = ppp::v2::Header::try_from(&buffer[..]).map_err(|error| invalid(&format!("PROXY v2: {error}")))?;
    let source = match (header.command, header.addresses) {
        (ppp::v2::Command::Local, _) => None,
        (_, ppp::v2::Addresses::IPv4(addresses)) => {
            Some(SocketAddr::from((addresses.source_address, addresses.source_port)))
        }
        (_, ppp::v2::Addresses::IPv6(addresses)) => {
            Some(SocketAddr::from((addresses.source_address, addresses.source_port)))
        }
        _ => None,
    };
    Ok((source, rest))
}
