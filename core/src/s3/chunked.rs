//! aws-chunked framing (`Content-Encoding: aws-chunked`), decoded as a stream.
//!
//! S3 streaming uploads wrap the body in chunks: `hex-size[;chunk-signature=sig]\r\n`, the data,
//! `\r\n`, ...; a final zero-size chunk; optional trailers (`x-amz-checksum-crc32:...`,
//! `x-amz-trailer-signature:...`), each `name:value\r\n`; and a closing `\r\n`. The decoder is
//! sans-IO: feed it bytes as they arrive, in any split, and it emits events. Everything is
//! bounded: header lines, trailer count and size, chunk sizes; malformed input is a typed
//! error, never a panic.

use bytes::Bytes;

/// Longest chunk-header line (`hex;chunk-signature=<64 hex>` is under 100 bytes).
pub const CHUNK_LINE_MAX: usize = 1024;
/// Longest trailer line.
pub const TRAILER_LINE_MAX: usize = 4096;
/// Most trailer fields.
pub const TRAILERS_MAX: usize = 16;

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkedEvent {
    /// A chunk header: its data length and signature (signed streams).
    Chunk {
        /// Data bytes in this chunk.
        size: u64,
        /// `chunk-signature=` value, if present.
        signature: Option<String>,
    },
    /// Body data (a chunk's data may arrive in several pieces).
    Data(Bytes),
    /// A trailer field after the final chunk.
    Trailer {
        /// Lowercased name.
        name: String,
        /// Value, trimmed.
        value: String,
    },
    /// The stream ended (after the final chunk and any trailers).
    End,
}

/// Why a stream is not valid aws-chunked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkedError {
    /// A chunk's or the trailers' signature does not match (checked by the caller's verifier).
    #[error("aws-chunked chunk signature does not match")]
    BadSignature,
    /// A chunk header is not `hex-size[;ext]`.
    #[error("malformed aws-chunked chunk header")]
    BadChunkHeader,
    /// A line exceeds its limit.
    #[error("aws-chunked line longer than {limit} bytes")]
    LineTooLong {
        /// The limit broken.
        limit: usize,
    },
    /// Chunk data not followed by CRLF.
    #[error("aws-chunked chunk data not followed by CRLF")]
    MissingCrlf,
    /// A trailer line is not `name:value`.
    #[error("malformed aws-chunked trailer")]
    BadTrailer,
    /// More than [`TRAILERS_MAX`] trailers.
    #[error("more than {TRAILERS_MAX} aws-chunked trailers")]
    TooManyTrailers,
    /// Bytes after the end of the stream.
    #[error("data after the end of the aws-chunked stream")]
    TrailingData,
    /// The input ended inside the stream.
    #[error("aws-chunked stream ended before its final chunk")]
    Truncated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    ChunkHeader,
    Data { remaining: u64 },
    DataCr,
    DataLf,
    Trailers,
    Done,
}

/// A streaming aws-chunked decoder.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    trailers: usize,
    decoded: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::ChunkHeader,
            line: Vec::new(),
            trailers: 0,
            decoded: 0,
        }
    }

    /// True once the final chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far.
    pub fn decoded_length(&self) -> u64 {
        self.decoded
    }

    /// Consume all of `input`, appending events to `events`.
    pub fn feed(&mut self, mut input: Bytes, events: &mut Vec<ChunkedEvent>) -> Result<(), ChunkedError> {
        while !input.is_empty() {
            match self.state {
                State::ChunkHeader | State::Trailers => {
                    let limit = if self.state == State::ChunkHeader {
                        CHUNK_LINE_MAX
                    } else {
                        TRAILER_LINE_MAX
                    };
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + input.len() > limit {
                            return Err(ChunkedError::LineTooLong { limit });
                        }
                        self.line.extend_from_slice(&input);
                        return Ok(());
                    };
                    if self.line.len() + end > limit {
                        return Err(ChunkedError::LineTooLong { limit });
                    }
                    self.line.extend_from_slice(&input[..end]);
                    let _ = input.split_to(end + 1);
                    if self.line.last() != Some(&b'\r') {
                        return Err(if self.state == State::ChunkHeader {
                            ChunkedError::BadChunkHeader
                        } else {
                            ChunkedError::BadTrailer
                        });
                    }
                    self.line.pop();
                    let line = std::mem::take(&mut self.line);
                    if self.state == State::ChunkHeader {
                        self.chunk_header(&line, events)?;
                    } else {
                        self.trailer(&line, events)?;
                    }
                }
                State::Data { remaining } => {
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len());
                    let data = input.split_to(take);
                    self.decoded += take as u64;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    events.push(ChunkedEvent::Data(data));
                }
                State::DataCr | State::DataLf => {
                    let expected = if self.state == State::DataCr { b'\r' } else { b'\n' };
                    if input[0] != expected {
                        return Err(ChunkedError::MissingCrlf);
                    }
                    let _ = input.split_to(1);
                    self.state = if self.state == State::DataCr {
                        State::DataLf
                    } else {
                        State::ChunkHeader
                    };
                }
                State::Done => return Err(ChunkedError::TrailingData),
            }
        }
        Ok(())
    }

    /// The input ended: an error unless the stream was complete.
    pub fn finish(&self) -> Result<(), ChunkedError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(ChunkedError::Truncated)
        }
    }

    fn chunk_header(&mut self, line: &[u8], events: &mut Vec<ChunkedEvent>) -> Result<(), ChunkedError> {
        let text = std::str::from_utf8(line).map_err(|_| ChunkedError::BadChunkHeader)?;
        let (size, extensions) = text.split_once(';').unwrap_or((text, ""));
        let size = size.trim();
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChunkedError::BadChunkHeader);
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| ChunkedError::BadChunkHeader)?;
        let signature = extensions
            .split(';')
            .filter_map(|extension| extension.trim().strip_prefix("chunk-signature="))
            .map(str::to_owned)
            .next();
        events.push(ChunkedEvent::Chunk { size, signature });
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::Data { remaining: size }
        };
        Ok(())
    }

    fn trailer(&mut self, line: &[u8], events: &mut Vec<ChunkedEvent>) -> Result<(), ChunkedError> {
        if line.is_empty() {
            self.state = State::Done;
            events.push(ChunkedEvent::End);
            return Ok(());
        }
        self.trailers += 1;
        if self.trailers > TRAILERS_MAX {
            return Err(ChunkedError::TooManyTrailers);
        }
        let text = std::str::from_utf8(line).map_err(|_| ChunkedError::BadTrailer)?;
        let (name, value) = text.split_once(':').ok_or(ChunkedError::BadTrailer)?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ChunkedError::BadTrailer);
        }
        events.push(ChunkedEvent::Trailer {
            name: name.to_ascii_lowercase(),
            value: value.trim().to_owned(),
        });
        Ok(())
    }
}

/// Encode data as unsigned aws-chunked (one chunk), for re-framing a decoded signed stream.
pub fn encode_unsigned_chunk(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Encode the end of an unsigned aws-chunked stream with these trailers.
pub fn encode_unsigned_end(trailers: &[(String, String)]) -> Bytes {
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<Vec<ChunkedEvent>, ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut events = Vec::new();
        for piece in pieces {
            decoder.feed(Bytes::copy_from_slice(piece), &mut events)?;
        }
        decoder.finish()?;
        Ok(events)
    }

    fn data_of(events: &[ChunkedEvent]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|event| match event {
                ChunkedEvent::Data(data) => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn signed_stream_with_trailers_decodes() {
        // Proves the format the AWS SDKs send: signed chunks, checksum and trailer signature.
        let sig = "a".repeat(64);
        let stream = format!(
            "5;chunk-signature={sig}\r\nhello\r\n6;chunk-signature={sig}\r\n world\r\n0;chunk-signature={sig}\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{sig}\r\n\r\n"
        );
        let events = decode_all(&[stream.as_bytes()]).expect("valid");
        assert_eq!(data_of(&events), b"hello world");
        assert!(events.contains(&ChunkedEvent::Chunk {
            size: 5,
            signature: Some(sig.clone())
        }));
        assert!(events.contains(&ChunkedEvent::Trailer {
            name: "x-amz-checksum-crc32".into(),
            value: "AAAAAA==".into()
        }));
        assert_eq!(events.last(), Some(&ChunkedEvent::End));
    }

    #[test]
    fn malformed_streams_are_errors() {
        // Proves each kind of damage is refused, including a stream cut short.
        let cases: [(&[u8], ChunkedError); 6] = [
            (b"zz\r\n", ChunkedError::BadChunkHeader),
            (b"5\r\nhelloXX", ChunkedError::MissingCrlf),
            (b"0\r\nno-colon\r\n\r\n", ChunkedError::BadTrailer),
            (b"0\r\n\r\nextra", ChunkedError::TrailingData),
            (b"5\r\nhel", ChunkedError::Truncated),
            (b"5\nhello\r\n", ChunkedError::BadChunkHeader),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_all(&[input]),
                Err(expected.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = vec![b'1'; CHUNK_LINE_MAX + 10];
        assert!(matches!(decode_all(&[&long]), Err(ChunkedError::LineTooLong { .. })));
    }

    proptest! {
        /// Any chunking of any data, split at any points, decodes back to the same data.
        #[test]
        fn round_trip_in_any_split(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..8),
            splits in prop::collection::vec(0usize..2000, 0..10),
            signed in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            let extension = if signed { format!(";chunk-signature={}", "0".repeat(64)) } else { String::new() };
            for chunk in &chunks {
                stream.extend_from_slice(format!("{:x}{extension}\r\n", chunk.len()).as_bytes());
                stream.extend_from_slice(chunk);
                stream.extend_from_slice(b"\r\n");
            }
            stream.extend_from_slice(format!("0{extension}\r\nx-amz-checksum-crc32:abc=\r\n\r\n").as_bytes());
            let mut points: Vec<usize> = splits.into_iter().map(|p| p % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for point in points {
                pieces.push(&stream[start..point]);
                start = point;
            }
            pieces.push(&stream[start..]);
            let events = decode_all(&pieces).expect("well-formed stream");
            let expected: Vec<u8> = chunks.concat();
            prop_assert_eq!(data_of(&events), expected);
            prop_assert_eq!(events.last(), Some(&ChunkedEvent::End));
        }

        /// Garbage never panics.
        #[test]
        fn garbage_never_panics(input in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(&[&input]);
        }
    }
}
