//! Replay sources: image files or an IDX set, and WAV files, looped and paced — for the
//! demo, tests and users without hardware. They produce the same [`Raw`] inputs as the
//! camera and microphone.

use std::path::{Path, PathBuf};

use crate::dataset::{self, LoadOptions};
use crate::features::{self, Clip, Raw};

use super::CaptureError;

fn list_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, CaptureError> {
    let mut files: Vec<PathBuf> = walk(dir)
        .map_err(|e| CaptureError::Open {
            source_name: dir.display().to_string(),
            message: e.to_string(),
        })?
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CaptureError::Open {
            source_name: dir.display().to_string(),
            message: format!("no {} files", exts.join("/")),
        });
    }
    Ok(files)
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Images from a folder (PNG/JPEG, recursively) or an IDX set (`dir/split` given as
/// `path` = `dir/split`), one per call, looping when asked.
pub struct ReplayImages {
    items: Vec<Raw>,
    next: usize,
    looped: bool,
}

impl ReplayImages {
    pub fn open(path: &Path, looped: bool) -> Result<Self, CaptureError> {
        let items = if path.is_dir() {
            list_files(path, &["png", "jpg", "jpeg"])?
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(&f).map_err(|e| CaptureError::Open {
                        source_name: f.display().to_string(),
                        message: e.to_string(),
                    })?;
                    features::decode(&bytes).map_err(|e| CaptureError::Open {
                        source_name: f.display().to_string(),
                        message: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            // `dir/split` names an IDX pair.
            let (dir, split) = match (path.parent(), path.file_name().and_then(|s| s.to_str())) {
                (Some(d), Some(s)) => (d, s),
                _ => {
                    return Err(CaptureError::Open {
                        source_name: path.display().to_string(),
                        message: "not a folder or an IDX set".into(),
                    });
                }
            };
            dataset::load(dir, split, &LoadOptions::default())
                .map_err(|e| CaptureError::Open {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                })?
                .items
                .into_iter()
                .map(|i| i.raw)
                .collect()
        };
        Ok(Self {
            items,
            next: 0,
            looped,
        })
    }

    /// The next image, or `None` at the end when not looping.
    pub fn next_image(&mut self) -> Option<Raw> {
        if self.next >= self.items.len() {
            if !self.looped {
                return None;
            }
            self.next = 0;
        }
        self.next += 1;
        self.items.get(self.next - 1).cloned()
    }
}

/// WAV files played back to back as one stream at `sample_rate_hz`, in chunks.
pub struct ReplayAudio {
    stream: Vec<f32>,
    pos: usize,
    looped: bool,
    sample_rate_hz: u32,
}

impl ReplayAudio {
    pub fn open(path: &Path, sample_rate_hz: u32, looped: bool) -> Result<Self, CaptureError> {
        let files = if path.is_dir() {
            list_files(path, &["wav"])?
        } else {
            vec![path.to_path_buf()]
        };
        let mut stream = Vec::new();
        for f in files {
            let err = |message: String| CaptureError::Open {
                source_name: f.display().to_string(),
                message,
            };
            let bytes = std::fs::read(&f).map_err(|e| err(e.to_string()))?;
            match features::decode(&bytes).map_err(|e| err(e.to_string()))? {
                Raw::Audio(clip) => stream.extend(
                    features::audio::resample(&clip.samples, clip.sample_rate_hz, sample_rate_hz)
                        .map_err(|e| err(e.to_string()))?,
                ),
                Raw::Image(_) => return Err(err("an image where audio was expected".into())),
            }
        }
        Ok(Self {
            stream,
            pos: 0,
            looped,
            sample_rate_hz,
        })
    }

    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// The next `n` samples (fewer at the end when not looping; empty when done).
    pub fn next_chunk(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos >= self.stream.len() {
                if !self.looped || self.stream.is_empty() {
                    break;
                }
                self.pos = 0;
            }
            let take = (n - out.len()).min(self.stream.len() - self.pos);
            out.extend_from_slice(&self.stream[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }

    /// Wrap samples as a clip.
    pub fn clip(&self, samples: Vec<f32>) -> Raw {
        Raw::Audio(Clip {
            samples,
            sample_rate_hz: self.sample_rate_hz,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/samples")
    }

    #[test]
    fn replays_image_folder_in_order_and_loops() {
        let mut r = ReplayImages::open(&demo().join("vision"), true).expect("open");
        let n = r.items.len();
        assert_eq!(n, 5);
        for _ in 0..n * 2 {
            assert!(matches!(r.next_image(), Some(Raw::Image(_))));
        }
        let mut once = ReplayImages::open(&demo().join("vision"), false).expect("open");
        assert_eq!((0..10).filter_map(|_| once.next_image()).count(), 5);
    }

    #[test]
    fn replays_wav_folder_as_one_stream() {
        let mut r = ReplayAudio::open(&demo().join("audio"), 16_000, false).expect("open");
        assert_eq!(r.stream.len(), 5 * 16_000);
        let mut total = 0;
        loop {
            let c = r.next_chunk(4_000);
            if c.is_empty() {
                break;
            }
            total += c.len();
        }
        assert_eq!(total, 5 * 16_000);
    }

    #[test]
    fn missing_or_empty_sources_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ReplayAudio::open(dir.path(), 16_000, true)
            .err()
            .expect("empty folder");
        assert!(err.to_string().contains("no wav files"), "{err}");
        let err = ReplayImages::open(&dir.path().join("nope"), true)
            .err()
            .expect("missing");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
