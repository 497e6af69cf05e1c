//! One picture file to one sample: read, decode (JPEG or PNG; grayscale,
//! CMYK, alpha and 16-bit pictures become 8-bit RGB), crop and resize in one
//! antialiased pass (fast_image_resize's convolution, PIL's bilinear), mirror,
//! and write as CHW bytes. A `Decoder` keeps its buffers, so the hot loop of a
//! worker allocates nothing per picture once they have grown.

use std::io::{Cursor, Read};
use std::path::Path;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ColorType, ImageDecoder, ImageReader};

use super::index::ImageFiles;
use super::transform::{CropBox, Transform};

/// Why a picture could not be made into a sample (the path is added by the caller).
pub type DecodeError = String;

/// Pictures larger than this are refused as bad files rather than decoded
/// (a 100-megapixel RGB picture is 300 MB before resizing).
const MAX_PIXELS: u64 = 100_000_000;

/// The reusable state of one decoding thread.
pub struct Decoder {
    file: Vec<u8>,
    pixels: Vec<u8>,
    rgb: Vec<u8>,
    resized: Vec<u8>,
    resizer: Resizer,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            file: vec![],
            pixels: vec![],
            rgb: vec![],
            resized: vec![],
            resizer: Resizer::new(),
        }
    }

    /// Reads `path` and writes its `side` x `side` sample, CHW, into `out`.
    pub fn sample(
        &mut self,
        path: &Path,
        transform: &Transform,
        epoch: u64,
        sample: u32,
        side: u32,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        self.file.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut self.file))
            .map_err(|e| e.to_string())?;
        self.sample_read(transform, epoch, sample, side, out)
    }

    /// Picture `sample` of `files` (a file or a shard member) as `sample`
    /// does it for a path.
    pub fn sample_indexed(
        &mut self,
        files: &ImageFiles,
        transform: &Transform,
        epoch: u64,
        sample: u32,
        side: u32,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        files
            .read(sample as usize, &mut self.file)
            .map_err(|e| e.to_string())?;
        self.sample_read(transform, epoch, sample, side, out)
    }

    /// A picture already decoded to 8-bit RGBA rows (a browser's canvas) to
    /// its sample, cropped and resized as a file's would be.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_rgba(
        &mut self,
        rgba: &[u8],
        width: u32,
        height: u32,
        transform: &Transform,
        sample: u32,
        side: u32,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        let count = width as usize * height as usize;
        if width == 0 || height == 0 || rgba.len() != 4 * count {
            return Err(format!(
                "{} bytes are not a {width}x{height} RGBA picture",
                rgba.len()
            ));
        }
        if count as u64 > MAX_PIXELS {
            return Err(format!(
                "the picture is {width}x{height}, over the {MAX_PIXELS} pixels this reader takes"
            ));
        }
        self.rgb.resize(3 * count, 0);
        drop_alpha(rgba, &mut self.rgb);
        let crop = transform.crop_box(0, sample, width, height, side);
        self.resize(width, height, crop, side)?;
        write_chw(&self.resized, side as usize, crop.flip, out);
        Ok(())
    }

    /// The picture in `self.file` to its sample.
    fn sample_read(
        &mut self,
        transform: &Transform,
        epoch: u64,
        sample: u32,
        side: u32,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        let (width, height) = self.decode_rgb()?;
        let crop = transform.crop_box(epoch, sample, width, height, side);
        self.resize(width, height, crop, side)?;
        write_chw(&self.resized, side as usize, crop.flip, out);
        Ok(())
    }

    /// Decodes the file bytes into `self.rgb` (8-bit RGB, row-major).
    fn decode_rgb(&mut self) -> Result<(u32, u32), DecodeError> {
        let reader = ImageReader::new(Cursor::new(&self.file[..]))
            .with_guessed_format()
            .map_err(|e| e.to_string())?;
        let decoder = reader
            .into_decoder()
            .map_err(|e| format!("not a readable JPEG or PNG image: {e}"))?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(format!("the picture is {width}x{height}"));
        }
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(format!(
                "the picture is {width}x{height}, over the {MAX_PIXELS} pixels this reader decodes"
            ));
        }
        let color = decoder.color_type();
        let bytes = usize::try_from(decoder.total_bytes()).map_err(|e| e.to_string())?;
        self.pixels.resize(bytes, 0);
        decoder
            .read_image(&mut self.pixels)
            .map_err(|e| format!("not a readable JPEG or PNG image: {e}"))?;
        let count = width as usize * height as usize;
        if color != ColorType::Rgb8 {
            self.rgb.resize(3 * count, 0);
        }
        match color {
            ColorType::Rgb8 => std::mem::swap(&mut self.rgb, &mut self.pixels),
            ColorType::L8 => expand(&self.pixels, 1, &mut self.rgb),
            ColorType::La8 => expand(&self.pixels, 2, &mut self.rgb),
            ColorType::Rgba8 => drop_alpha(&self.pixels, &mut self.rgb),
            _ => {
                // 16-bit and float pictures: rare, so through the image crate.
                let picture = image::load_from_memory(&self.file).map_err(|e| e.to_string())?;
                self.rgb.copy_from_slice(picture.to_rgb8().as_raw());
            }
        }
        Ok((width, height))
    }

    /// The crop box of `self.rgb`, resized to `side` x `side` into `self.resized`.
    fn resize(
        &mut self,
        width: u32,
        height: u32,
        crop: CropBox,
        side: u32,
    ) -> Result<(), DecodeError> {
        let source =
            ImageRef::new(width, height, &self.rgb, PixelType::U8x3).map_err(|e| e.to_string())?;
        self.resized.resize(3 * side as usize * side as usize, 0);
        let mut target = Image::from_slice_u8(side, side, &mut self.resized, PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(crop.left, crop.top, crop.width, crop.height);
        self.resizer
            .resize(&source, &mut target, &options)
            .map_err(|e| e.to_string())
    }
}

/// RGBA to RGB (the alpha channel is ignored, as PIL's convert("RGB") does).
fn drop_alpha(rgba: &[u8], rgb: &mut [u8]) {
    for (o, i) in rgb.chunks_exact_mut(3).zip(rgba.chunks_exact(4)) {
        o.copy_from_slice(&i[..3]);
    }
}

/// Gray (with or without alpha) to RGB.
fn expand(pixels: &[u8], stride: usize, rgb: &mut [u8]) {
    for (o, i) in rgb.chunks_exact_mut(3).zip(pixels.chunks_exact(stride)) {
        o.fill(i[0]);
    }
}

/// HWC RGB to CHW, mirrored left-right when `flip`.
fn write_chw(hwc: &[u8], side: usize, flip: bool, out: &mut [u8]) {
    let plane = side * side;
    for y in 0..side {
        let row = &hwc[3 * y * side..3 * (y + 1) * side];
        for x in 0..side {
            let sx = if flip { side - 1 - x } else { x };
            let p = &row[3 * sx..3 * sx + 3];
            let o = y * side + x;
            out[o] = p[0];
            out[plane + o] = p[1];
            out[2 * plane + o] = p[2];
        }
    }
}
