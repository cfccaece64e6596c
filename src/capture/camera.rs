//! The camera source through nokhwa (V4L2 on Linux).
//!
//! nokhwa's `Camera` is not `Send`, so a camera lives on its own thread from open to
//! close. Opening probes that the node really captures (boards expose metadata nodes too:
//! they open but offer no frame format), requests the configured resolution / fps /
//! format (the closest the device supports), and every frame goes through one decoding
//! path on nokhwa's decoder (`decode_buffer`, which [`decode_frame`] — what the tests feed
//! recorded MJPEG / YUYV frames to — calls too).
//! Frames are handed over in a keep-newest slot: a stale frame is worthless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat as NokhwaFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::{Capture, CaptureError, now_ms, slot};
use crate::features::Raw;
use crate::settings::CameraFormat;

/// Camera request, from `[pipeline.source]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraRequest {
    /// Index (`0`) or V4L2 path (`/dev/video0`).
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: Option<CameraFormat>,
    /// Minimum time between two frames handed to inference.
    pub interval_ms: u64,
}

fn frame_format(f: CameraFormat) -> FrameFormat {
    match f {
        CameraFormat::Mjpeg => FrameFormat::MJPEG,
        CameraFormat::Yuyv => FrameFormat::YUYV,
    }
}

/// The V4L2 index of `0` or `/dev/video0`.
pub fn parse_index(device: &str) -> Option<u32> {
    let d = device.trim();
    d.strip_prefix("/dev/video").unwrap_or(d).parse().ok()
}

/// Decode one raw frame (MJPEG or YUYV bytes as the camera delivers them) with nokhwa's
/// decoder into an RGB image.
pub fn decode_frame(
    format: CameraFormat,
    width: u32,
    height: u32,
    bytes: &[u8],
) -> Result<Raw, CaptureError> {
    if format == CameraFormat::Yuyv && bytes.len() != (width * height * 2) as usize {
        return Err(CaptureError::Failed {
            source_name: "camera frame".into(),
            message: format!(
                "a {width}x{height} YUYV frame has {} bytes, got {}",
                width * height * 2,
                bytes.len()
            ),
        });
    }
    let buffer = nokhwa::Buffer::new(Resolution::new(width, height), bytes, frame_format(format));
    decode_buffer(&buffer)
}

/// Decode a frame as nokhwa delivers it into an RGB image: the one decoding path of the
/// camera thread and of [`decode_frame`]. A decoder panic (decoders are C code) is an
/// error here, so a corrupt frame cannot take the camera thread down.
fn decode_buffer(buffer: &nokhwa::Buffer) -> Result<Raw, CaptureError> {
    let failed = |message: String| CaptureError::Failed {
        source_name: "camera frame".into(),
        message,
    };
    let format = buffer.source_frame_format();
    let rgb = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        buffer.decode_image::<RgbFormat>()
    }))
    .map_err(|_| failed(format!("the {format} decoder panicked")))?
    .map_err(|e| failed(format!("cannot decode a {format} frame: {e}")))?;
    let (w, h) = (rgb.width(), rgb.height());
    let img = image::RgbImage::from_raw(w, h, rgb.into_raw())
        .ok_or_else(|| failed("decoded frame has the wrong size".into()))?;
    Ok(Raw::Image(image::DynamicImage::ImageRgb8(img)))
}

/// Open and probe the camera; errors name the device and the cause.
fn open(req: &CameraRequest) -> Result<Camera, CaptureError> {
    let name = format!("camera `{}`", req.device);
    let err = |message: String| CaptureError::Open {
        source_name: name.clone(),
        message,
    };
    let index =
        parse_index(&req.device).ok_or_else(|| err("expected an index or /dev/videoN".into()))?;
    let wanted = NokhwaFormat::new(
        Resolution::new(req.width.max(1), req.height.max(1)),
        frame_format(req.format.unwrap_or(CameraFormat::Mjpeg)),
        req.fps.max(1),
    );
    let requested = if req.width == 0 || req.height == 0 {
        RequestedFormatType::AbsoluteHighestFrameRate
    } else {
        RequestedFormatType::Closest(wanted)
    };
    let mut camera = Camera::new(
        CameraIndex::Index(index),
        RequestedFormat::new::<RgbFormat>(requested),
    )
    .map_err(|e| err(e.to_string()))?;
    // A metadata node opens but has no capture format.
    let formats = camera.compatible_fourcc().map_err(|e| err(e.to_string()))?;
    if !formats
        .iter()
        .any(|f| matches!(f, FrameFormat::MJPEG | FrameFormat::YUYV))
    {
        return Err(err(format!(
            "no MJPEG or YUYV capture format (offers {formats:?}); is this a metadata node?"
        )));
    }
    camera.open_stream().map_err(|e| err(e.to_string()))?;
    Ok(camera)
}

/// Open the camera and hand frames over until `stop`; returns an error when it cannot open
/// or stops delivering (the caller retries with backoff).
pub fn run(
    req: &CameraRequest,
    out: &slot::Sender<Capture>,
    next_id: &AtomicU64,
    health: &super::health::SourceHealth,
    stop: &Arc<AtomicBool>,
) -> Result<(), CaptureError> {
    let mut camera = open(req)?;
    let fmt = camera.camera_format();
    tracing::info!(device = %req.device, format = %fmt, "camera streaming");
    let interval = Duration::from_millis(req.interval_ms);
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let frame = camera.frame().map_err(|e| CaptureError::Failed {
            source_name: format!("camera `{}`", req.device),
            message: e.to_string(),
        })?;
        health.alive();
        if last.is_some_and(|t| t.elapsed() < interval) {
            continue;
        }
        last = Some(Instant::now());
        let raw = match decode_buffer(&frame) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable camera frame skipped");
                continue;
            }
        };
        let capture = Capture {
            id: next_id.fetch_add(1, Ordering::Relaxed),
            ts_ms: now_ms(),
            raw,
        };
        if out.send(capture).is_err() {
            break;
        }
    }
    let _ = camera.stop_stream();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_index_from_number_or_path() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("/dev/video2"), Some(2));
        assert_eq!(parse_index("front"), None);
    }

    #[test]
    fn yuyv_frame_of_the_wrong_length_is_rejected() {
        let e = decode_frame(CameraFormat::Yuyv, 4, 4, &[0; 10]).unwrap_err();
        assert!(e.to_string().contains("YUYV"), "{e}");
    }

    #[test]
    fn opening_a_missing_camera_names_it() {
        let req = CameraRequest {
            device: "/dev/video97".into(),
            width: 320,
            height: 240,
            fps: 5,
            format: None,
            interval_ms: 0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, _rx) = slot::latest();
        let health = crate::capture::health::SourceHealth::default();
        let e = run(&req, &tx, &AtomicU64::new(0), &health, &stop).unwrap_err();
        assert!(e.to_string().contains("/dev/video97"), "{e}");
    }
}
