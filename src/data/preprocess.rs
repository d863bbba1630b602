//! `CLIPImageProcessor` in Rust (spec clip.md §6): decode to 8-bit RGB (Pillow `convert("RGB")`
//! semantics: grey replicated, alpha dropped), shortest-edge resize with Pillow's `BICUBIC`,
//! centre crop with floor offsets, rescale in float64, normalise in float32, CHW.
//!
//! Resampler: a port of Pillow's `Resample.c` (the a = −0.5 cubic kernel widened by the downscale
//! factor, coefficients normalised per output pixel over the in-image taps, 22-bit fixed point,
//! horizontal pass first with an 8-bit intermediate), so results equal Pillow's bit for bit.
//! A general resizer (`fast_image_resize`'s Catmull-Rom) was measured first: within one level
//! inside the image but up to 21/255 off along the borders, where Pillow renormalises the
//! truncated kernel.

use super::DataError;
use image::RgbImage;
use rayon::prelude::*;
use serde_json::Value as Json;
use std::path::Path;

// OpenAI's constants exactly as transformers writes them (rounded to f32 on use).
#[allow(clippy::excessive_precision)]
pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// Target of the shortest edge.
    pub shortest_edge: u32,
    /// Centre crop `(height, width)`.
    pub crop: (u32, u32),
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocessor {
    /// OpenAI's settings for a model whose vision tower takes `image_size` pixels.
    pub fn for_image_size(image_size: u32) -> Preprocessor {
        Preprocessor {
            shortest_edge: image_size,
            crop: (image_size, image_size),
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
        }
    }

    /// Reads `preprocessor_config.json` from a model directory when present, else OpenAI's
    /// settings at the model's image size.
    pub fn for_model(dir: &Path, image_size: u32) -> Result<Preprocessor, DataError> {
        let path = dir.join("preprocessor_config.json");
        let mut p = Preprocessor::for_image_size(image_size);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(p);
        };
        let bad = |reason: String| DataError::Invalid {
            path: path.clone(),
            reason,
        };
        let v: Json = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let int = |j: &Json| j.as_u64().map(|x| x as u32);
        match v.get("size") {
            Some(Json::Object(m)) => {
                if let Some(s) = m.get("shortest_edge").and_then(int) {
                    p.shortest_edge = s;
                }
            }
            Some(j) if int(j).is_some() => p.shortest_edge = int(j).unwrap_or(image_size),
            _ => {}
        }
        match v.get("crop_size") {
            Some(Json::Object(m)) => {
                if let (Some(h), Some(w)) =
                    (m.get("height").and_then(int), m.get("width").and_then(int))
                {
                    p.crop = (h, w);
                }
            }
            Some(j) if int(j).is_some() => {
                let s = int(j).unwrap_or(image_size);
                p.crop = (s, s);
            }
            _ => {}
        }
        let triple = |key: &str| -> Result<Option<[f32; 3]>, DataError> {
            match v.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Array(a)) if a.len() == 3 && a.iter().all(Json::is_number) => {
                    let f = |i: usize| a[i].as_f64().unwrap_or(0.0) as f32;
                    Ok(Some([f(0), f(1), f(2)]))
                }
                Some(_) => Err(bad(format!("`{key}` must be a list of 3 numbers"))),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            p.std = s;
        }
        if let Some(r) = v.get("resample").and_then(Json::as_u64)
            && r != 3
        {
            return Err(bad(format!(
                "`resample` is {r}; only bicubic (3), CLIP's, is implemented"
            )));
        }
        if p.crop.0 > p.shortest_edge || p.crop.1 > p.shortest_edge {
            return Err(bad(format!(
                "crop {:?} is larger than the resized shortest edge {}",
                p.crop, p.shortest_edge
            )));
        }
        Ok(p)
    }

    /// Output size of the shortest-edge resize (long side truncated, as transformers).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let s = self.shortest_edge as u64;
        let (w, h) = (width as u64, height as u64);
        if w <= h {
            (s as u32, (s * h / w) as u32)
        } else {
            ((s * w / h) as u32, s as u32)
        }
    }

    /// Resize + centre crop in 8 bits: `crop.1 × crop.0` RGB.
    pub fn resize_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        let (rw, rh) = self.resized_size(w, h);
        let resized = if (rw, rh) == (w, h) {
            img.clone()
        } else {
            pillow_bicubic(img, rw, rh)
        };
        let (ch, cw) = self.crop;
        let top = (rh - ch) / 2;
        let left = (rw - cw) / 2;
        image::imageops::crop_imm(&resized, left, top, cw, ch).to_image()
    }

    /// Per channel and 8-bit value: `(f32(f64(v)/255) − mean) / std`.
    fn table(&self) -> [[f32; 256]; 3] {
        let mut t = [[0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                let x = (v as f64 * (1.0 / 255.0)) as f32;
                *slot = (x - self.mean[c]) / self.std[c];
            }
        }
        t
    }

    /// One image → normalised CHW floats, appended to `out`.
    pub fn process_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let mut chw = Vec::with_capacity(self.image_len());
        self.crop_chw_into(img, &mut chw);
        self.normalize_into(&chw, &self.table(), out);
    }

    /// One image → resized and cropped 8-bit CHW values (what [`Self::normalize`] takes),
    /// appended to `out`. Stored calibration sets keep this form: a quarter of the floats' size,
    /// and normalising it later is exact.
    pub fn crop_chw_into(&self, img: &RgbImage, out: &mut Vec<u8>) {
        let cropped = self.resize_crop(img);
        let raw = cropped.as_raw();
        let n = raw.len() / 3;
        out.reserve(3 * n);
        for c in 0..3 {
            out.extend((0..n).map(|i| raw[3 * i + c]));
        }
    }

    fn normalize_into(&self, chw: &[u8], table: &[[f32; 256]; 3], out: &mut Vec<f32>) {
        let plane = (self.crop.0 * self.crop.1) as usize;
        out.reserve(chw.len());
        for (k, values) in chw.chunks(plane).enumerate() {
            let row = &table[k % 3];
            out.extend(values.iter().map(|&v| row[v as usize]));
        }
    }

    /// 8-bit CHW images (any number, back to back) → normalised floats.
    pub fn normalize(&self, chw: &[u8]) -> Vec<f32> {
        let mut out = Vec::with_capacity(chw.len());
        self.normalize_into(chw, &self.table(), &mut out);
        out
    }

    /// Values per preprocessed image.
    pub fn image_len(&self) -> usize {
        3 * (self.crop.0 * self.crop.1) as usize
    }

    /// Decodes, resizes and crops a batch in parallel (8-bit CHW); items come from `load`.
    pub fn batch_u8<F>(&self, indices: &[usize], load: F) -> Result<Vec<u8>, DataError>
    where
        F: Fn(usize) -> Result<RgbImage, DataError> + Sync,
    {
        let chunks: Vec<Vec<u8>> = indices
            .par_iter()
            .map(|&i| {
                let mut v = Vec::with_capacity(self.image_len());
                self.crop_chw_into(&load(i)?, &mut v);
                Ok(v)
            })
            .collect::<Result<_, DataError>>()?;
        Ok(chunks.concat())
    }

    /// Decodes and preprocesses a batch in parallel; items come from `load`.
    pub fn batch<F>(&self, indices: &[usize], load: F) -> Result<Vec<f32>, DataError>
    where
        F: Fn(usize) -> Result<RgbImage, DataError> + Sync,
    {
        let table = self.table();
        let chunks: Vec<Vec<f32>> = indices
            .par_iter()
            .map(|&i| {
                let mut chw = Vec::with_capacity(self.image_len());
                self.crop_chw_into(&load(i)?, &mut chw);
                let mut v = Vec::with_capacity(chw.len());
                self.normalize_into(&chw, &table, &mut v);
                Ok(v)
            })
            .collect::<Result<_, DataError>>()?;
        Ok(chunks.concat())
    }
}

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: the first input index and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let scaled = k * (1u32 << PRECISION_BITS) as f64;
                    if k < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass over `src` (`w × h`, 3 channels) along x (`horizontal`) or y.
fn pass(src: &[u8], w: usize, h: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let coeffs = coefficients(if horizontal { w } else { h } as u32, out_len as u32);
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = vec![0u8; ow * oh * 3];
    let round = 1i64 << (PRECISION_BITS - 1);
    for y in 0..oh {
        for x in 0..ow {
            let (start, k) = &coeffs[if horizontal { x } else { y }];
            let mut acc = [round; 3];
            for (t, &kt) in k.iter().enumerate() {
                let (sx, sy) = if horizontal {
                    (start + t, y)
                } else {
                    (x, start + t)
                };
                let p = &src[(sy * w + sx) * 3..][..3];
                for c in 0..3 {
                    acc[c] += p[c] as i64 * kt as i64;
                }
            }
            let o = &mut out[(y * ow + x) * 3..][..3];
            for c in 0..3 {
                o[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Pillow's `Image.resize((w, h), BICUBIC)` for RGB: horizontal pass first, 8-bit intermediate;
/// a pass whose size does not change is skipped, as Pillow does.
pub fn pillow_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let mut buf = img.as_raw().clone();
    let mut cur_w = w;
    if ow != w {
        buf = pass(&buf, w, h, ow, true);
        cur_w = ow;
    }
    if oh != h {
        buf = pass(&buf, cur_w, h, oh, false);
    }
    RgbImage::from_raw(out_w, out_h, buf).expect("buffer matches the size")
}

/// Decodes PNG/JPEG bytes to 8-bit RGB (grey replicated, palette expanded, alpha dropped).
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    image::load_from_memory(bytes)
        .map(|d| d.to_rgb8())
        .map_err(|e| format!("undecodable image ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_truncates_the_long_side() {
        let p = Preprocessor::for_image_size(224);
        assert_eq!(p.resized_size(28, 28), (224, 224));
        assert_eq!(p.resized_size(500, 375), (298, 224));
        assert_eq!(p.resized_size(375, 500), (224, 298));
        assert_eq!(p.resized_size(224, 300), (224, 300));
    }

    #[test]
    fn constant_image_normalises_exactly() {
        let p = Preprocessor::for_image_size(16);
        let img = RgbImage::from_pixel(40, 23, image::Rgb([255, 128, 0]));
        let mut out = vec![];
        p.process_into(&img, &mut out);
        assert_eq!(out.len(), 3 * 16 * 16);
        let expect = |v: f64, c: usize| ((v / 255.0) as f32 - OPENAI_MEAN[c]) / OPENAI_STD[c];
        assert!((out[0] - expect(255.0, 0)).abs() < 1e-6);
        assert!((out[256] - expect(128.0, 1)).abs() < 1e-6);
        assert!((out[767] - expect(0.0, 2)).abs() < 1e-6);
    }
}
