//! Reading physical memory from boot adapters, on the target and in tests.

/// Read access to physical memory, as the boot adapters need it.
///
/// On the target it goes through the direct map in effect at entry; in host
/// tests it is a simulated memory. Parsers of loader structures use only this,
/// so they run unchanged on the host.
pub trait PhysRead {
    /// Copies `buffer.len()` bytes starting at physical address `phys`.
    /// Returns `false` when any of those bytes cannot be read.
    fn read_phys(&self, phys: u64, buffer: &mut [u8]) -> bool;

    /// Reads a little-endian `u32`.
    fn read_u32(&self, phys: u64) -> Option<u32> {
        let mut bytes = [0; 4];
        self.read_phys(phys, &mut bytes).then(|| u32::from_le_bytes(bytes))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, phys: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.read_phys(phys, &mut bytes).then(|| u64::from_le_bytes(bytes))
    }

    /// Reads a NUL-terminated string of at most `buffer.len()` bytes into
    /// `buffer` and returns the bytes before the NUL (or the whole buffer when
    /// no NUL was found in it).
    fn read_c_string<'buffer>(&self, phys: u64, buffer: &'buffer mut [u8]) -> Option<&'buffer [u8]> {
        const STEP: usize = 64;
        let mut length = 0;
        while length < buffer.len() {
            let step = STEP.min(buffer.len() - length);
            let address = phys.checked_add(length as u64)?;
            if !self.read_phys(address, &mut buffer[length..length + step]) {
                // The string may end right before unreadable memory: read the
                // remaining bytes one at a time.
                let byte = &mut buffer[length..length + 1];
                if !self.read_phys(address, byte) {
                    return None;
                }
                if byte[0] == 0 {
                    return Some(&buffer[..length]);
                }
                length += 1;
                continue;
            }
            if let Some(nul) = buffer[length..length + step].iter().position(|&byte| byte == 0) {
                return Some(&buffer[..length + nul]);
            }
            length += step;
        }
        Some(buffer)
    }
}

/// Physical memory simulated by one byte slice starting at `base`: what
/// the fuzz targets give the parsers.
#[derive(Debug, Clone, Copy)]
pub struct SliceMemory<'bytes> {
    /// The physical address of `bytes[0]`.
    pub base: u64,
    /// The memory's contents.
    pub bytes: &'bytes [u8],
}

impl PhysRead for SliceMemory<'_> {
    fn read_phys(&self, phys: u64, buffer: &mut [u8]) -> bool {
        let Some(offset) = phys.checked_sub(self.base) else { return false };
        let Some(end) = offset.checked_add(buffer.len() as u64) else { return false };
        let (Ok(offset), Ok(end)) = (usize::try_from(offset), usize::try_from(end)) else { return false };
        match self.bytes.get(offset..end) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::PhysRead;

    /// A few pieces of simulated physical memory.
    #[derive(Default)]
    pub struct FakeMemory {
        pieces: Vec<(u64, Vec<u8>)>,
    }

    impl FakeMemory {
        pub fn put(&mut self, phys: u64, bytes: &[u8]) {
            self.pieces.push((phys, bytes.to_vec()));
        }
    }

    impl PhysRead for FakeMemory {
        fn read_phys(&self, phys: u64, buffer: &mut [u8]) -> bool {
            let Some(end) = phys.checked_add(buffer.len() as u64) else {
                return false;
            };
            for (start, bytes) in &self.pieces {
                let piece_end = start + bytes.len() as u64;
                if *start <= phys && end <= piece_end {
                    let offset = (phys - start) as usize;
                    buffer.copy_from_slice(&bytes[offset..offset + buffer.len()]);
                    return true;
                }
            }
            false
        }
    }

    #[test]
    fn slice_memory_reads_only_inside_its_slice() {
        let memory = super::SliceMemory { base: 0x1000, bytes: b"abcdef" };
        let mut buffer = [0; 3];
        assert!(memory.read_phys(0x1003, &mut buffer));
        assert_eq!(&buffer, b"def");
        assert!(!memory.read_phys(0x1004, &mut buffer), "past the end");
        assert!(!memory.read_phys(0xfff, &mut buffer), "before the start");
        assert!(!memory.read_phys(u64::MAX, &mut buffer), "wrapping");
    }

    #[test]
    fn c_string_stops_at_nul_and_at_unreadable_memory() {
        let mut memory = FakeMemory::default();
        memory.put(0x1000, b"hello\0world");
        memory.put(0x2000, b"no-terminator");
        let mut buffer = [0; 128];
        assert_eq!(memory.read_c_string(0x1000, &mut buffer), Some(&b"hello"[..]));
        assert_eq!(memory.read_c_string(0x2000, &mut buffer), None);
        let mut small = [0; 4];
        assert_eq!(memory.read_c_string(0x1000, &mut small), Some(&b"hell"[..]));
    }
}
