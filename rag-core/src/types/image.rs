use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The encoding of an [`Image`]: the formats that Claude Messages and Converse take as image
/// input (PNG, JPEG, GIF and WebP on both, per their API references).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/gif`
    Gif,
    /// `image/webp`
    Webp,
}

impl ImageFormat {
    /// The media type (`image/png`, ...), as Claude Messages' `media_type` spells it.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
        }
    }

    /// The short name (`png`, `jpeg`, `gif`, `webp`), as Converse's `format` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
        }
    }

    /// The format whose signature starts `bytes` (the files' magic numbers), if any.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else {
            None
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An image: its encoded bytes and their format. Shared cheaply (the bytes are reference
/// counted), printed by [`fmt::Debug`] as its format and size, never its bytes. Serialized as
/// `{"format": "png", "data": "<base64>"}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Image {
    format: ImageFormat,
    data: std::sync::Arc<[u8]>,
}

impl Image {
    /// An image of `format` with the encoded `data`. The bytes must start with the format's
    /// signature: an image whose bytes say otherwise is refused here rather than by the model.
    pub fn new(format: ImageFormat, data: impl Into<Vec<u8>>) -> Result<Self> {
        let data = data.into();
        match ImageFormat::sniff(&data) {
            Some(found) if found == format => Ok(Image {
                format,
                data: data.into(),
            }),
            Some(found) => Err(Error::invalid_input(
                "image",
                format!("the bytes are {found}, not {format}"),
            )),
            None => Err(Error::invalid_input(
                "image",
                format!("the bytes are not a {format} image (no {format} signature)"),
            )),
        }
    }

    /// An image whose format is read from its bytes' signature.
    pub fn from_bytes(data: impl Into<Vec<u8>>) -> Result<Self> {
        let data = data.into();
        let format = ImageFormat::sniff(&data).ok_or_else(|| {
            Error::invalid_input("image", "the bytes are not a PNG, JPEG, GIF or WebP image")
        })?;
        Ok(Image {
            format,
            data: data.into(),
        })
    }

    /// An image from its base64 text (standard alphabet, padded), as image models return it.
    pub fn from_base64(text: &str) -> Result<Self> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| Error::invalid_input("image", format!("not base64: {e}")))?;
        Image::from_bytes(data)
    }

    /// Its format.
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// Its encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Its bytes in base64 (standard alphabet, padded), as Claude Messages' `data` takes them.
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.data)
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Image({}, {} bytes)", self.format, self.data.len())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageRepr<'a> {
    format: ImageFormat,
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
}

impl Serialize for Image {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        ImageRepr {
            format: self.format,
            data: self.to_base64().into(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Image {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use base64::Engine as _;
        let repr = ImageRepr::deserialize(deserializer)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(repr.data.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Image::new(repr.format, data).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TINY_PNG as PNG;

    #[test]
    fn formats_are_read_from_signatures() {
        assert_eq!(Image::from_bytes(PNG).unwrap().format(), ImageFormat::Png);
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a...."), Some(ImageFormat::Gif));
        assert_eq!(
            ImageFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert!(Image::from_bytes(b"hello".to_vec()).is_err());
        assert!(Image::new(ImageFormat::Jpeg, PNG).is_err());
    }

    #[test]
    fn serde_and_base64_round_trip() {
        let image = Image::from_bytes(PNG).unwrap();
        let json = serde_json::to_string(&image).unwrap();
        assert!(
            json.starts_with(r#"{"format":"png","data":"iVBORw0KGgo"#),
            "{json}"
        );
        let back: Image = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
        assert_eq!(Image::from_base64(&image.to_base64()).unwrap(), image);
        assert_eq!(
            format!("{image:?}"),
            format!("Image(png, {} bytes)", PNG.len())
        );
        assert!(serde_json::from_str::<Image>(r#"{"format":"jpeg","data":"aGVsbG8="}"#).is_err());
    }
}
