//! Reading uncompressed IDX files (the MNIST format): `split-images-idx3-ubyte` with a
//! big-endian header `00 00 08 03, count, rows, cols` followed by `u8` pixels, and
//! `split-labels-idx1-ubyte` with `00 00 08 01, count` followed by `u8` labels.

use std::path::Path;

use super::{DatasetError, read_file};

const IMAGES_MAGIC: [u8; 4] = [0, 0, 8, 3];
const LABELS_MAGIC: [u8; 4] = [0, 0, 8, 1];
const IMAGES_HEADER_BYTES: usize = 16;
const LABELS_HEADER_BYTES: usize = 8;

/// The images of an IDX3 `u8` file, kept as the file's bytes plus the parsed header.
#[derive(Debug)]
pub(crate) struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Image height in pixels.
    pub rows: u32,
    /// Image width in pixels.
    pub cols: u32,
    bytes: Vec<u8>,
}

impl IdxImages {
    /// Row-major pixels of image `index` (`rows*cols` bytes); `None` when out of range.
    pub fn pixels(&self, index: usize) -> Option<&[u8]> {
        let size = self.rows as usize * self.cols as usize;
        let start = IMAGES_HEADER_BYTES.checked_add(index.checked_mul(size)?)?;
        self.bytes.get(start..start.checked_add(size)?)
    }
}

fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(word)
}

fn idx_error(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn check_magic(path: &Path, bytes: &[u8], magic: [u8; 4], what: &str) -> Result<(), DatasetError> {
    if bytes.len() < 4 {
        return Err(idx_error(
            path,
            format!(
                "truncated: {} bytes, too short for the magic number",
                bytes.len()
            ),
        ));
    }
    if bytes[..4] != magic {
        return Err(idx_error(
            path,
            format!(
                "wrong magic {:02x} {:02x} {:02x} {:02x}, expected {:02x} {:02x} {:02x} {:02x} ({what})",
                bytes[0], bytes[1], bytes[2], bytes[3], magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    Ok(())
}

fn check_length(path: &Path, actual: usize, expected: u64, what: &str) -> Result<(), DatasetError> {
    if (actual as u64) < expected {
        Err(idx_error(
            path,
            format!(
                "truncated: header promises {expected} bytes ({what}) but the file has {actual}"
            ),
        ))
    } else if actual as u64 > expected {
        Err(idx_error(
            path,
            format!(
                "{} unexpected trailing bytes after {expected} bytes ({what})",
                actual as u64 - expected
            ),
        ))
    } else {
        Ok(())
    }
}

/// Read and check an IDX3 `u8` image file.
pub(crate) fn read_images(path: &Path) -> Result<IdxImages, DatasetError> {
    parse_images(path, read_file(path)?)
}

/// Check an IDX3 `u8` image file's bytes; `path` is only used in errors.
pub(crate) fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<IdxImages, DatasetError> {
    check_magic(path, &bytes, IMAGES_MAGIC, "IDX3 u8 images")?;
    if bytes.len() < IMAGES_HEADER_BYTES {
        return Err(idx_error(
            path,
            format!(
                "truncated: {} bytes, shorter than the 16-byte header",
                bytes.len()
            ),
        ));
    }
    let count = be_u32(&bytes, 4);
    let rows = be_u32(&bytes, 8);
    let cols = be_u32(&bytes, 12);
    if rows == 0 || cols == 0 {
        return Err(idx_error(
            path,
            format!("image size {rows}x{cols} is empty"),
        ));
    }
    let expected =
        IMAGES_HEADER_BYTES as u64 + u64::from(count) * u64::from(rows) * u64::from(cols);
    check_length(
        path,
        bytes.len(),
        expected,
        &format!("{count} images of {rows}x{cols}"),
    )?;
    Ok(IdxImages {
        count: count as usize,
        rows,
        cols,
        bytes,
    })
}

/// Read and check an IDX1 `u8` label file.
pub(crate) fn read_labels(path: &Path) -> Result<Vec<u8>, DatasetError> {
    parse_labels(path, read_file(path)?)
}

/// Check an IDX1 `u8` label file's bytes and return the labels; `path` is only used in
/// errors.
pub(crate) fn parse_labels(path: &Path, mut bytes: Vec<u8>) -> Result<Vec<u8>, DatasetError> {
    check_magic(path, &bytes, LABELS_MAGIC, "IDX1 u8 labels")?;
    if bytes.len() < LABELS_HEADER_BYTES {
        return Err(idx_error(
            path,
            format!(
                "truncated: {} bytes, shorter than the 8-byte header",
                bytes.len()
            ),
        ));
    }
    let count = be_u32(&bytes, 4);
    check_length(
        path,
        bytes.len(),
        LABELS_HEADER_BYTES as u64 + u64::from(count),
        &format!("{count} labels"),
    )?;
    bytes.drain(..LABELS_HEADER_BYTES);
    Ok(bytes)
}

/// Encode images and labels as IDX files (test fixtures).
#[cfg(test)]
pub(crate) fn encode(
    rows: u32,
    cols: u32,
    images: &[Vec<u8>],
    labels: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut img = IMAGES_MAGIC.to_vec();
    img.extend_from_slice(&(images.len() as u32).to_be_bytes());
    img.extend_from_slice(&rows.to_be_bytes());
    img.extend_from_slice(&cols.to_be_bytes());
    for pixels in images {
        img.extend_from_slice(pixels);
    }
    let mut lab = LABELS_MAGIC.to_vec();
    lab.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    lab.extend_from_slice(labels);
    (img, lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("x-images-idx3-ubyte")
    }

    #[test]
    fn parses_images_and_labels() {
        let (img, lab) = encode(2, 3, &[vec![1, 2, 3, 4, 5, 6], vec![9; 6]], &[4, 7]);
        let images = parse_images(path(), img).expect("images");
        assert_eq!((images.count, images.rows, images.cols), (2, 2, 3));
        assert_eq!(images.pixels(0), Some(&[1u8, 2, 3, 4, 5, 6][..]));
        assert_eq!(images.pixels(1), Some(&[9u8; 6][..]));
        assert_eq!(images.pixels(2), None);
        assert_eq!(parse_labels(path(), lab).expect("labels"), vec![4, 7]);
    }

    #[test]
    fn rejects_truncated_idx_file() {
        let (mut img, mut lab) = encode(2, 2, &[vec![0; 4], vec![0; 4]], &[0, 1]);
        img.pop();
        let msg = parse_images(path(), img)
            .expect_err("truncated")
            .to_string();
        assert!(
            msg.contains("truncated") && msg.contains("x-images-idx3-ubyte"),
            "{msg}"
        );
        lab.pop();
        let msg = parse_labels(path(), lab)
            .expect_err("truncated")
            .to_string();
        assert!(msg.contains("truncated"), "{msg}");
        let msg = parse_images(path(), vec![0, 0, 8, 3, 0])
            .expect_err("short")
            .to_string();
        assert!(msg.contains("16-byte header"), "{msg}");
    }

    #[test]
    fn rejects_wrong_magic() {
        let (img, lab) = encode(1, 1, &[vec![0]], &[0]);
        // Swapped: a label file given as images and vice versa.
        let msg = parse_images(path(), lab)
            .expect_err("labels as images")
            .to_string();
        assert!(msg.contains("wrong magic 00 00 08 01"), "{msg}");
        assert!(parse_labels(path(), img).is_err());
    }

    #[test]
    fn rejects_trailing_bytes() {
        let (mut img, _) = encode(1, 1, &[vec![0]], &[0]);
        img.push(0);
        let msg = parse_images(path(), img).expect_err("trailing").to_string();
        assert!(msg.contains("1 unexpected trailing bytes"), "{msg}");
    }
}
