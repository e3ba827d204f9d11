//! Where the bucket keeps recordings and sidecars: an S3 storage class (`--storage-class`,
//! sent as `x-amz-storage-class` through object_store's storage-class attribute and on the
//! metadata copy), and server-side encryption, which object_store sends on every write from
//! the standard settings (`AWS_SERVER_SIDE_ENCRYPTION`, `AWS_SSE_KMS_KEY_ID`,
//! `AWS_SSE_BUCKET_KEY_ENABLED`) and which the requests callvault signs itself must repeat.

use std::fmt;
use std::str::FromStr;

use super::S3Options;

/// An S3 storage class a recording can be written in and read back from at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    ReducedRedundancy,
}

impl StorageClass {
    pub const ALL: [StorageClass; 6] = [
        Self::Standard,
        Self::StandardIa,
        Self::OnezoneIa,
        Self::IntelligentTiering,
        Self::GlacierIr,
        Self::ReducedRedundancy,
    ];

    /// The name S3 knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::StandardIa => "STANDARD_IA",
            Self::OnezoneIa => "ONEZONE_IA",
            Self::IntelligentTiering => "INTELLIGENT_TIERING",
            Self::GlacierIr => "GLACIER_IR",
            Self::ReducedRedundancy => "REDUCED_REDUNDANCY",
        }
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        if let Some(class) = Self::ALL.into_iter().find(|c| c.as_str() == upper) {
            return Ok(class);
        }
        let names = Self::ALL.map(Self::as_str).join(", ");
        Err(match upper.as_str() {
            "GLACIER" | "DEEP_ARCHIVE" | "GLACIER_FR" => format!(
                "storage class {upper}: its objects cannot be read back without a restore, so `verify`, the media check and the metadata copy cannot run; write in GLACIER_IR, or move older recordings with a lifecycle rule (one of {names})"
            ),
            _ => format!("storage class {s:?} is not one callvault writes: use one of {names}"),
        })
    }
}

/// The server-side encryption headers S3 needs on a `CopyObject` to keep the object
/// encrypted as object_store wrote it (a copy without them takes the bucket's default).
pub(crate) fn encryption_headers(s3: &S3Options) -> Result<Vec<(&'static str, String)>, String> {
    // object_store takes each setting with or without its `aws_` prefix.
    let option = |name: &str| {
        s3.iter()
            .find(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.strip_prefix("aws_").unwrap_or(&k) == name
            })
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if option("sse_customer_key_base64").is_some() {
        return Err(
            "customer-provided keys (AWS_SSE_CUSTOMER_KEY_BASE64, SSE-C) are not supported: callvault copies large recordings onto themselves to set their metadata; use SSE-KMS (AWS_SERVER_SIDE_ENCRYPTION=aws:kms) or SSE-S3".into(),
        );
    }
    let mut headers = Vec::new();
    if let Some(kind) = option("server_side_encryption") {
        headers.push(("x-amz-server-side-encryption", kind));
    }
    if let Some(key) = option("sse_kms_key_id") {
        headers.push(("x-amz-server-side-encryption-aws-kms-key-id", key));
    }
    if let Some(on) = option("sse_bucket_key_enabled") {
        headers.push(("x-amz-server-side-encryption-bucket-key-enabled", on));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_by_their_s3_names_and_archive_tiers_are_refused_with_why() {
        assert_eq!("standard_ia".parse(), Ok(StorageClass::StandardIa));
        assert_eq!("GLACIER_IR".parse(), Ok(StorageClass::GlacierIr));
        for class in StorageClass::ALL {
            assert_eq!(class.as_str().parse(), Ok(class));
        }
        let glacier = "GLACIER".parse::<StorageClass>().unwrap_err();
        assert!(glacier.contains("restore"), "{glacier}");
        assert!("COLD".parse::<StorageClass>().is_err());
    }

    #[test]
    fn a_storage_class_is_for_s3_stores_only() {
        let config = crate::store::StoreConfig {
            storage_class: Some(StorageClass::StandardIa),
            ..crate::store::StoreConfig::new("memory:///archive")
        };
        let err = crate::store::Store::open(&config).unwrap_err().to_string();
        assert!(err.contains("S3 stores only"), "{err}");
        let s3 = crate::store::Store::open(&crate::store::StoreConfig {
            storage_class: Some(StorageClass::GlacierIr),
            s3: vec![("aws_endpoint".into(), "http://127.0.0.1:9".into())],
            ..crate::store::StoreConfig::new("s3://bucket/calls")
        })
        .unwrap();
        assert_eq!(s3.storage_class(), Some(StorageClass::GlacierIr));
    }

    #[test]
    fn the_copy_repeats_the_encryption_settings_and_sse_c_is_refused() {
        let s3 = vec![
            (
                "aws_server_side_encryption".to_owned(),
                "aws:kms".to_owned(),
            ),
            ("aws_sse_kms_key_id".to_owned(), "arn:key/1".to_owned()),
            ("aws_sse_bucket_key_enabled".to_owned(), "true".to_owned()),
        ];
        assert_eq!(
            encryption_headers(&s3).unwrap(),
            [
                ("x-amz-server-side-encryption", "aws:kms".to_owned()),
                (
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "arn:key/1".to_owned()
                ),
                (
                    "x-amz-server-side-encryption-bucket-key-enabled",
                    "true".to_owned()
                ),
            ]
        );
        assert_eq!(encryption_headers(&Vec::new()).unwrap(), []);
        let sse_c = vec![("aws_sse_customer_key_base64".to_owned(), "a2V5".to_owned())];
        assert!(encryption_headers(&sse_c).unwrap_err().contains("SSE-C"));
    }
}
