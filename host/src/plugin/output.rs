//! A plugin's stdout and stderr: not passed through, but the last
//! `OUTPUT_TAIL` bytes are kept per instance, so that when a plugin traps,
//! the error can say what it printed last (a Python traceback, a Rust panic
//! message from a guest without the SDK's hook). Writes never fail and never
//! block: a plugin cannot fill the host's memory or its log through them.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per instance.
pub const OUTPUT_TAIL: usize = 2048;

/// The kept tail of an instance's output; clones share it.
#[derive(Clone, Default)]
pub struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    /// The kept output as text (lossy UTF-8, trimmed), and forgets it.
    pub fn take(&self) -> String {
        let Ok(mut tail) = self.0.lock() else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&tail).trim().to_string();
        tail.clear();
        text
    }

    fn append(&self, bytes: &[u8]) {
        if let Ok(mut tail) = self.0.lock() {
            tail.extend_from_slice(bytes);
            if tail.len() > OUTPUT_TAIL {
                let cut = tail.len() - OUTPUT_TAIL;
                tail.drain(..cut);
            }
        }
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 asks for this; plugins are linked against WASIp2.
        Box::new(tokio::io::sink())
    }
}

#[async_trait]
impl OutputStream for OutputTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let tail = OutputTail::default();
        tail.append(&vec![b'a'; OUTPUT_TAIL]);
        tail.append(b"the end\n");
        let text = tail.take();
        assert_eq!(text.len(), OUTPUT_TAIL - 1);
        assert!(text.ends_with("the end"));
        assert_eq!(tail.take(), "");
    }
}
