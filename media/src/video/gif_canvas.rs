//! An animated GIF's frames, composited exactly as the `image` crate's `GifDecoder`
//! composites them (`GifFrameIterator`: each frame blended over the frames it did not
//! dispose, transparent pixels showing what is under them), but at the cost of each frame's
//! own rectangle: the whole canvas is copied and converted only for the frames kept. A GIF
//! of 10,000 one-pixel frames on a large canvas is then 10,000 pixels of work, not 10,000
//! canvases.

use std::io::Read;

use gif::DisposalMethod;

use super::decode::Step;
use crate::image::check_decode_size;
use crate::image::decode::over_white;
use crate::{MediaError, RgbImage};

/// RGBA bytes per pixel.
const RGBA: usize = 4;

fn frame_error(name: &str, index: usize, e: gif::DecodingError) -> MediaError {
    MediaError::Video {
        source_name: name.to_string(),
        message: format!("frame {index}: {e}"),
    }
}

/// A GIF being decoded frame by frame.
pub(crate) struct GifCanvas<R: Read> {
    decoder: gif::Decoder<R>,
    /// What the next frame is drawn over (the `image` crate's "non-disposed frame"), RGBA,
    /// transparent at first.
    under: Vec<u8>,
    width: usize,
    height: usize,
    limit: usize,
    name: String,
    index: usize,
}

impl<R: Read> GifCanvas<R> {
    /// Reads the header; refuses a canvas over `limit` pixels before allocating it.
    pub(crate) fn new(reader: R, name: &str, limit: usize) -> Result<Self, MediaError> {
        let error = |e: gif::DecodingError| MediaError::Video {
            source_name: name.to_string(),
            message: e.to_string(),
        };
        // The options `image`'s decoder uses (RGBA output, its default memory limit).
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let decoder = options.read_info(reader).map_err(error)?;
        let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
        check_decode_size(width, height, limit, name)?;
        Ok(Self {
            decoder,
            under: vec![0; width * height * RGBA],
            width,
            height,
            limit,
            name: name.to_string(),
            index: 0,
        })
    }

    /// Decodes the next frame into the canvas; returns the composited frame (alpha over
    /// white) when `keep`.
    pub(crate) fn step(&mut self, keep: bool) -> Result<Step, MediaError> {
        let Some(info) = self
            .decoder
            .next_frame_info()
            .map_err(|e| frame_error(&self.name, self.index, e))?
        else {
            return Ok(Step::End);
        };
        let (left, top) = (usize::from(info.left), usize::from(info.top));
        let (fw, fh) = (usize::from(info.width), usize::from(info.height));
        let dispose = info.dispose;
        // A frame may declare itself larger than the canvas.
        check_decode_size(fw, fh, self.limit, &self.name)?;
        let mut pixels = vec![0u8; self.decoder.buffer_size()];
        self.decoder
            .read_into_buffer(&mut pixels)
            .map_err(|e| frame_error(&self.name, self.index, e))?;
        self.index += 1;
        // The canvas before this frame outside its rectangle (untouched below).
        let mut shown = keep.then(|| self.under.clone());
        // The part of the frame on the canvas.
        for fy in 0..fh.min(self.height.saturating_sub(top)) {
            for fx in 0..fw.min(self.width.saturating_sub(left)) {
                let at = ((top + fy) * self.width + left + fx) * RGBA;
                let from = (fy * fw + fx) * RGBA;
                let under = &mut self.under[at..at + RGBA];
                let mut pixel = [0u8; RGBA];
                pixel.copy_from_slice(&pixels[from..from + RGBA]);
                if pixel[3] == 0 {
                    pixel.copy_from_slice(under);
                }
                if let Some(shown) = &mut shown {
                    shown[at..at + RGBA].copy_from_slice(&pixel);
                }
                match dispose {
                    DisposalMethod::Any | DisposalMethod::Keep => under.copy_from_slice(&pixel),
                    DisposalMethod::Background => under.fill(0),
                    DisposalMethod::Previous => {}
                }
            }
        }
        Ok(match shown {
            None => Step::Skipped,
            Some(rgba) => Step::Frame(RgbImage {
                width: self.width,
                height: self.height,
                data: rgba
                    .chunks_exact(RGBA)
                    .flat_map(|p| over_white([p[0], p[1], p[2], p[3]]))
                    .collect(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use image::AnimationDecoder;

    use super::*;

    /// A 7×5 GIF whose frames cover parts of the canvas (one past its edge), with a
    /// transparent colour and every disposal method.
    fn layered_gif() -> Vec<u8> {
        let palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 99, 199];
        let mut bytes = Vec::new();
        let mut encoder = gif::Encoder::new(&mut bytes, 7, 5, &palette).expect("header");
        let frames = [
            (0, 0, 7u16, 5u16, DisposalMethod::Keep),
            (1, 1, 3, 2, DisposalMethod::Background),
            (2, 0, 4, 4, DisposalMethod::Previous),
            (5, 3, 4, 3, DisposalMethod::Any),
            (0, 2, 6, 2, DisposalMethod::Keep),
            (3, 1, 2, 3, DisposalMethod::Background),
        ];
        for (i, (left, top, width, height, dispose)) in frames.into_iter().enumerate() {
            let area = usize::from(width) * usize::from(height);
            let pixels: Vec<u8> = (0..area).map(|p| ((p + i) % 5) as u8).collect();
            let frame = gif::Frame {
                left,
                top,
                width,
                height,
                dispose,
                transparent: Some(4).filter(|_| i > 0),
                buffer: Cow::Owned(pixels),
                ..Default::default()
            };
            encoder.write_frame(&frame).expect("frame");
        }
        drop(encoder);
        bytes
    }

    #[test]
    fn frames_equal_the_image_crates_composited_frames() {
        let bytes = layered_gif();
        let decoder =
            image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).expect("decoder");
        let want: Vec<Vec<u8>> = decoder
            .into_frames()
            .map(|f| {
                let f = f.expect("frame");
                f.into_buffer()
                    .pixels()
                    .flat_map(|p| over_white(p.0))
                    .collect()
            })
            .collect();
        assert_eq!(want.len(), 6);
        let mut canvas = GifCanvas::new(bytes.as_slice(), "layers.gif", 1 << 20).expect("header");
        for (i, want) in want.iter().enumerate() {
            match canvas.step(true).expect("decodes") {
                Step::Frame(frame) => assert_eq!(&frame.data, want, "frame {i}"),
                _ => panic!("frame {i} missing"),
            }
        }
        assert!(matches!(canvas.step(true), Ok(Step::End)));
        // Skipping frames does not change the ones kept.
        let mut canvas = GifCanvas::new(bytes.as_slice(), "layers.gif", 1 << 20).expect("header");
        for i in 0..6 {
            match canvas.step(i == 5).expect("decodes") {
                Step::Frame(frame) => assert_eq!(frame.data, want[5]),
                Step::Skipped => assert!(i < 5),
                Step::End => panic!("ended early"),
            }
        }
    }
}
