//! 20 ms framing of μ-law audio for the telephony transport.

use bytes::{Bytes, BytesMut};

use crate::audio::{MULAW_FRAME_BYTES, MULAW_SILENCE};

/// Collects μ-law bytes of any chunk size and hands them out as 160-byte (20 ms) frames.
#[derive(Debug, Default)]
pub struct MulawFramer {
    /// Bytes not yet forming a whole frame.
    pending: BytesMut,
}

impl MulawFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds audio.
    pub fn push(&mut self, mulaw: &[u8]) {
        self.pending.extend_from_slice(mulaw);
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        (self.pending.len() >= MULAW_FRAME_BYTES)
            .then(|| self.pending.split_to(MULAW_FRAME_BYTES).freeze())
    }

    /// The remaining partial frame padded with μ-law silence, if any bytes remain.
    pub fn flush_padded(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        let mut frame = self.pending.split();
        frame.resize(MULAW_FRAME_BYTES, MULAW_SILENCE);
        Some(frame.freeze())
    }

    /// Bytes waiting for a whole frame.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Drops pending audio (on interruption).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_any_chunk_size_come_out_as_160_byte_frames_with_a_padded_tail() {
        let mut framer = MulawFramer::new();
        framer.push(&[1; 100]);
        assert!(framer.next_frame().is_none());
        framer.push(&[2; 300]);
        let first = framer.next_frame().unwrap();
        assert_eq!(first.len(), 160);
        assert_eq!(&first[..100], &[1; 100]);
        assert_eq!(framer.next_frame().unwrap().len(), 160);
        assert!(framer.next_frame().is_none());
        assert_eq!(framer.pending_len(), 80);
        let tail = framer.flush_padded().unwrap();
        assert_eq!(tail.len(), 160);
        assert_eq!(&tail[80..], &[MULAW_SILENCE; 80]);
        assert!(framer.flush_padded().is_none());
    }
}
