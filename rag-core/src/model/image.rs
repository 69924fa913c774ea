//! The image models: what each Bedrock text-to-image model takes, checked without a client.
//!
//! Sources:
//! - Amazon Nova Canvas: the Nova user guide's "Image generation access and usage"
//!   (<https://docs.aws.amazon.com/nova/latest/userguide/image-gen-access.html>) and "Request
//!   and response structure for image generation"
//!   (<https://docs.aws.amazon.com/nova/latest/userguide/image-gen-req-resp-structure.html>):
//!   `text` and `negativeText` "must be 1-1024 characters in length"; each side 320-4096 px
//!   and divisible by 16, an aspect ratio between 1:4 and 4:1, at most 4,194,304 pixels
//!   (2048 x 2048); `cfgScale` 1.1-10; `seed` 0-858,993,459 (Bedrock's Nova Canvas code
//!   example draws "a random seed between 0 and 858,993,459").
//! - Amazon Titan Image Generator G1 v2: Bedrock's "Amazon Titan Image Generator G1 models"
//!   (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-image.html>):
//!   `text` and `negativeText` up to 512 characters; the listed sizes only; `cfgScale` 1.1-10;
//!   `seed` 0-2,147,483,646.

use std::fmt;

use crate::error::{Error, Result};
use crate::generator::ImageRequest;
use crate::model::base_model_id;

/// A text-to-image model family: models of one family take the same request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageModelFamily {
    /// Amazon Nova Canvas (`amazon.nova-canvas-v1:0`).
    NovaCanvas,
    /// Amazon Titan Image Generator G1 v2 (`amazon.titan-image-generator-v2:0`).
    TitanImageV2,
}

impl ImageModelFamily {
    /// The family's name, as errors print it.
    pub fn name(self) -> &'static str {
        match self {
            ImageModelFamily::NovaCanvas => "Amazon Nova Canvas",
            ImageModelFamily::TitanImageV2 => "Amazon Titan Image Generator v2",
        }
    }
}

impl fmt::Display for ImageModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sizes an image model draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageSizes {
    /// Any size within bounds.
    Range {
        /// The shortest side, in pixels.
        min_side: u32,
        /// The longest side, in pixels.
        max_side: u32,
        /// Each side is a multiple of this.
        multiple_of: u32,
        /// The longer side is at most this many times the shorter one.
        max_aspect_ratio: u32,
        /// Width times height is at most this.
        max_pixels: u64,
    },
    /// Only these `(width, height)` pairs.
    Listed(&'static [(u32, u32)]),
}

/// What a text-to-image model takes: prompt lengths, sizes, guidance and seed, checked before
/// any call by [`ImageModelProfile::check`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ImageModelProfile {
    /// The request format.
    pub family: ImageModelFamily,
    /// The most characters of `prompt` (and of `negative_prompt`); both take at least one.
    pub max_prompt_chars: usize,
    /// The sizes it draws.
    pub sizes: ImageSizes,
    /// The smallest `cfg_scale`.
    pub min_cfg_scale: f32,
    /// The largest `cfg_scale`.
    pub max_cfg_scale: f32,
    /// The largest `seed` (the smallest is 0).
    pub max_seed: u32,
}

/// Titan Image Generator v2's sizes, `(width, height)`, as its parameter page lists them.
const TITAN_SIZES: &[(u32, u32)] = &[
    (1024, 1024),
    (768, 768),
    (512, 512),
    (768, 1152),
    (384, 576),
    (1152, 768),
    (576, 384),
    (768, 1280),
    (384, 640),
    (1280, 768),
    (640, 384),
    (896, 1152),
    (448, 576),
    (1152, 896),
    (576, 448),
    (768, 1408),
    (384, 704),
    (1408, 768),
    (704, 384),
    (640, 1408),
    (320, 704),
    (1408, 640),
    (704, 320),
    (1152, 640),
    (1173, 640),
];

const NOVA_CANVAS: ImageModelProfile = ImageModelProfile {
    family: ImageModelFamily::NovaCanvas,
    max_prompt_chars: 1_024,
    sizes: ImageSizes::Range {
        min_side: 320,
        max_side: 4_096,
        multiple_of: 16,
        max_aspect_ratio: 4,
        max_pixels: 4_194_304,
    },
    min_cfg_scale: 1.1,
    max_cfg_scale: 10.0,
    max_seed: 858_993_459,
};

const TITAN_IMAGE_V2: ImageModelProfile = ImageModelProfile {
    family: ImageModelFamily::TitanImageV2,
    max_prompt_chars: 512,
    sizes: ImageSizes::Listed(TITAN_SIZES),
    min_cfg_scale: 1.1,
    max_cfg_scale: 10.0,
    max_seed: 2_147_483_646,
};

/// Base-id prefixes and their profiles.
const IMAGE_TABLE: &[(&str, ImageModelProfile)] = &[
    ("amazon.nova-canvas-v1", NOVA_CANVAS),
    ("amazon.titan-image-generator-v2", TITAN_IMAGE_V2),
];

impl ImageModelProfile {
    /// The profile of a Bedrock image model id (geography prefixes and ARNs are accepted, as
    /// [`crate::ModelProfile::for_model_id`] takes them). Ids the table does not list are a
    /// [`Error::Config`].
    pub fn for_model_id(model_id: &str) -> Result<Self> {
        let base = base_model_id(model_id.trim());
        IMAGE_TABLE
            .iter()
            .find(|(prefix, _)| base.starts_with(prefix))
            .map(|(_, profile)| *profile)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown Bedrock image model id `{model_id}`: the image model table lists {}",
                    IMAGE_TABLE
                        .iter()
                        .map(|(prefix, p)| format!("{prefix}* ({})", p.family))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Checks `request` against what the model takes; the error names the field
    /// (`image.prompt`, `image.negative_prompt`, `image.width`, `image.height`,
    /// `image.cfg_scale`, `image.seed`).
    pub fn check(&self, request: &ImageRequest) -> Result<()> {
        let family = self.family;
        let text = |field: &'static str, value: &str| {
            let chars = value.chars().count();
            if value.trim().is_empty() || chars > self.max_prompt_chars {
                Err(Error::invalid_input(
                    field,
                    format!(
                        "{family} takes 1 to {} characters, got {chars}{}",
                        self.max_prompt_chars,
                        if chars > 0 && value.trim().is_empty() {
                            " of white space"
                        } else {
                            ""
                        }
                    ),
                ))
            } else {
                Ok(())
            }
        };
        text("image.prompt", &request.prompt)?;
        if let Some(negative) = &request.negative_prompt {
            text("image.negative_prompt", negative)?;
        }
        self.check_size(request.width, request.height)?;
        if let Some(cfg) = request.cfg_scale {
            if !(self.min_cfg_scale..=self.max_cfg_scale).contains(&cfg) {
                return Err(Error::invalid_input(
                    "image.cfg_scale",
                    format!(
                        "{family} takes {} to {}, got {cfg}",
                        self.min_cfg_scale, self.max_cfg_scale
                    ),
                ));
            }
        }
        if let Some(seed) = request.seed {
            if seed > self.max_seed {
                return Err(Error::invalid_input(
                    "image.seed",
                    format!("{family} takes 0 to {}, got {seed}", self.max_seed),
                ));
            }
        }
        Ok(())
    }

    fn check_size(&self, width: u32, height: u32) -> Result<()> {
        let family = self.family;
        match self.sizes {
            ImageSizes::Listed(sizes) => {
                if sizes.contains(&(width, height)) {
                    return Ok(());
                }
                // Name the side that no listed size has, or the width when both appear.
                let field = if !sizes.iter().any(|&(w, _)| w == width) {
                    "image.width"
                } else if !sizes.iter().any(|&(_, h)| h == height) {
                    "image.height"
                } else {
                    "image.width"
                };
                Err(Error::invalid_input(
                    field,
                    format!(
                        "{family} draws only its listed sizes, not {width}x{height}: {}",
                        sizes
                            .iter()
                            .map(|(w, h)| format!("{w}x{h}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
            ImageSizes::Range {
                min_side,
                max_side,
                multiple_of,
                max_aspect_ratio,
                max_pixels,
            } => {
                for (field, side) in [("image.width", width), ("image.height", height)] {
                    if !(min_side..=max_side).contains(&side) || side % multiple_of != 0 {
                        return Err(Error::invalid_input(
                            field,
                            format!(
                                "{family} takes {min_side} to {max_side} pixels, a multiple of \
                                 {multiple_of}, got {side}"
                            ),
                        ));
                    }
                }
                let (long, short) = (width.max(height), width.min(height));
                if u64::from(long) > u64::from(short) * u64::from(max_aspect_ratio) {
                    return Err(Error::invalid_input(
                        if width > height {
                            "image.width"
                        } else {
                            "image.height"
                        },
                        format!(
                            "{family} takes aspect ratios from 1:{max_aspect_ratio} to \
                             {max_aspect_ratio}:1, got {width}x{height}"
                        ),
                    ));
                }
                let pixels = u64::from(width) * u64::from(height);
                if pixels > max_pixels {
                    return Err(Error::invalid_input(
                        "image.width",
                        format!(
                            "{family} draws at most {max_pixels} pixels, got {width}x{height} = {pixels}"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(result: Result<()>) -> &'static str {
        match result {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn ids_resolve_with_their_prefixes_and_unknown_ids_are_config_errors() {
        for id in [
            "amazon.nova-canvas-v1:0",
            "us.amazon.nova-canvas-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-canvas-v1:0",
        ] {
            let p = ImageModelProfile::for_model_id(id).unwrap();
            assert_eq!(p.family, ImageModelFamily::NovaCanvas, "{id}");
        }
        let p = ImageModelProfile::for_model_id("amazon.titan-image-generator-v2:0").unwrap();
        assert_eq!(
            (p.family, p.max_seed),
            (ImageModelFamily::TitanImageV2, 2_147_483_646)
        );
        for id in [
            "amazon.titan-image-generator-v1",
            "stability.sd3-large-v1:0",
            "",
        ] {
            assert!(
                matches!(
                    ImageModelProfile::for_model_id(id),
                    Err(Error::Config { .. })
                ),
                "{id}"
            );
        }
    }

    #[test]
    fn nova_canvas_bounds() {
        let p = ImageModelProfile::for_model_id("amazon.nova-canvas-v1:0").unwrap();
        let ok = ImageRequest {
            negative_prompt: Some("blur".into()),
            cfg_scale: Some(6.5),
            seed: Some(858_993_459),
            ..ImageRequest::new("a lighthouse at dusk", 1280, 720)
        };
        p.check(&ok).unwrap();
        p.check(&ImageRequest::new("x".repeat(1_024), 2048, 2048))
            .unwrap();
        p.check(&ImageRequest::new("x", 320, 1280)).unwrap();
        let with = |f: fn(&mut ImageRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            p.check(&r)
        };
        assert_eq!(
            field(with(|r| r.prompt = "x".repeat(1_025))),
            "image.prompt"
        );
        assert_eq!(field(with(|r| r.prompt = " ".into())), "image.prompt");
        assert_eq!(
            field(with(|r| r.negative_prompt = Some(String::new()))),
            "image.negative_prompt"
        );
        assert_eq!(field(with(|r| r.width = 1000)), "image.width");
        assert_eq!(field(with(|r| r.width = 304)), "image.width");
        assert_eq!(field(with(|r| r.height = 4_112)), "image.height");
        // 1:5 is past 1:4; 4096 x 2048 is past 4,194,304 pixels.
        assert_eq!(
            field(with(|r| (r.width, r.height) = (320, 1600))),
            "image.height"
        );
        assert_eq!(
            field(with(|r| (r.width, r.height) = (4096, 2048))),
            "image.width"
        );
        assert_eq!(field(with(|r| r.cfg_scale = Some(1.0))), "image.cfg_scale");
        assert_eq!(field(with(|r| r.cfg_scale = Some(10.5))), "image.cfg_scale");
        assert_eq!(
            field(with(|r| r.cfg_scale = Some(f32::NAN))),
            "image.cfg_scale"
        );
        assert_eq!(field(with(|r| r.seed = Some(858_993_460))), "image.seed");
    }

    #[test]
    fn titan_v2_takes_only_its_listed_sizes() {
        let p = ImageModelProfile::for_model_id("amazon.titan-image-generator-v2:0").unwrap();
        for (w, h) in [(1024, 1024), (512, 512), (1173, 640), (320, 704)] {
            p.check(&ImageRequest::new("a red bicycle", w, h)).unwrap();
        }
        // 1280 x 720 is a Nova Canvas size, not one of Titan's.
        assert_eq!(
            field(p.check(&ImageRequest::new("x", 1280, 720))),
            "image.height"
        );
        assert_eq!(
            field(p.check(&ImageRequest::new("x", 1000, 1024))),
            "image.width"
        );
        assert_eq!(
            field(p.check(&ImageRequest::new("x".repeat(513), 512, 512))),
            "image.prompt"
        );
        p.check(&ImageRequest::new("é".repeat(512), 512, 512))
            .unwrap();
        let seed = ImageRequest {
            seed: Some(2_147_483_647),
            ..ImageRequest::new("x", 512, 512)
        };
        assert_eq!(field(p.check(&seed)), "image.seed");
    }
}
