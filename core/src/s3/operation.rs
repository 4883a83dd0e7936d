//! The S3 operations Storefront tells apart, and what each one means for retries and policy.

use std::fmt;

/// An S3 API operation, as named in the S3 API reference.
///
/// `Other` covers every operation that Storefront forwards without special treatment (bucket
/// ACLs, lifecycle, `?restore`, ...). It is never retried, and policy treats it as bucket
/// administration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `GET /`
    ListBuckets,
    /// `PUT /bucket`
    CreateBucket,
    /// `DELETE /bucket`
    DeleteBucket,
    /// `HEAD /bucket`
    HeadBucket,
    /// `GET /bucket?location`
    GetBucketLocation,
    /// `GET /bucket`
    ListObjects,
    /// `GET /bucket?list-type=2`
    ListObjectsV2,
    /// `GET /bucket?versions`
    ListObjectVersions,
    /// `GET /bucket?uploads`
    ListMultipartUploads,
    /// `GET /bucket?policy`
    GetBucketPolicy,
    /// `PUT /bucket?policy`
    PutBucketPolicy,
    /// `DELETE /bucket?policy`
    DeleteBucketPolicy,
    /// `POST /bucket?delete`
    DeleteObjects,
    /// `POST /bucket` with a multipart/form-data body (browser uploads)
    PostObject,
    /// `GET /bucket/key`
    GetObject,
    /// `HEAD /bucket/key`
    HeadObject,
    /// `PUT /bucket/key`
    PutObject,
    /// `PUT /bucket/key` with `x-amz-copy-source`
    CopyObject,
    /// `DELETE /bucket/key`
    DeleteObject,
    /// `POST /bucket/key?uploads`
    CreateMultipartUpload,
    /// `PUT /bucket/key?partNumber=N&uploadId=U`
    UploadPart,
    /// `PUT /bucket/key?partNumber=N&uploadId=U` with `x-amz-copy-source`
    UploadPartCopy,
    /// `POST /bucket/key?uploadId=U`
    CompleteMultipartUpload,
    /// `DELETE /bucket/key?uploadId=U`
    AbortMultipartUpload,
    /// `GET /bucket/key?uploadId=U`
    ListParts,
    /// `GET /bucket/key?tagging`
    GetObjectTagging,
    /// `PUT /bucket/key?tagging`
    PutObjectTagging,
    /// `DELETE /bucket/key?tagging`
    DeleteObjectTagging,
    /// Anything else: forwarded as is, never retried.
    Other,
}

/// The kind of access an operation needs; the policy engine grants these per bucket/prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// Read object data or metadata.
    Read,
    /// List buckets, objects, versions, uploads or parts.
    List,
    /// Create or overwrite objects and their tags.
    Write,
    /// Delete objects or their tags.
    Delete,
    /// Start, feed, finish or abort a multipart upload.
    Multipart,
    /// Create or delete buckets, change bucket settings, or anything unrecognised.
    BucketAdmin,
}

impl Operation {
    /// Every operation, for tables and tests.
    pub const ALL: [Operation; 29] = [
        Operation::ListBuckets,
        Operation::CreateBucket,
        Operation::DeleteBucket,
        Operation::HeadBucket,
        Operation::GetBucketLocation,
        Operation::ListObjects,
        Operation::ListObjectsV2,
        Operation::ListObjectVersions,
        Operation::ListMultipartUploads,
        Operation::GetBucketPolicy,
        Operation::PutBucketPolicy,
        Operation::DeleteBucketPolicy,
        Operation::DeleteObjects,
        Operation::PostObject,
        Operation::GetObject,
        Operation::HeadObject,
        Operation::PutObject,
        Operation::CopyObject,
        Operation::DeleteObject,
        Operation::CreateMultipartUpload,
        Operation::UploadPart,
        Operation::UploadPartCopy,
        Operation::CompleteMultipartUpload,
        Operation::AbortMultipartUpload,
        Operation::ListParts,
        Operation::GetObjectTagging,
        Operation::PutObjectTagging,
        Operation::DeleteObjectTagging,
        Operation::Other,
    ];

    /// The operation's name in the S3 API reference (and in metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Operation::ListBuckets => "ListBuckets",
            Operation::CreateBucket => "CreateBucket",
            Operation::DeleteBucket => "DeleteBucket",
            Operation::HeadBucket => "HeadBucket",
            Operation::GetBucketLocation => "GetBucketLocation",
            Operation::ListObjects => "ListObjects",
            Operation::ListObjectsV2 => "ListObjectsV2",
            Operation::ListObjectVersions => "ListObjectVersions",
            Operation::ListMultipartUploads => "ListMultipartUploads",
            Operation::GetBucketPolicy => "GetBucketPolicy",
            Operation::PutBucketPolicy => "PutBucketPolicy",
            Operation::DeleteBucketPolicy => "DeleteBucketPolicy",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::PostObject => "PostObject",
            Operation::GetObject => "GetObject",
            Operation::HeadObject => "HeadObject",
            Operation::PutObject => "PutObject",
            Operation::CopyObject => "CopyObject",
            Operation::DeleteObject => "DeleteObject",
            Operation::CreateMultipartUpload => "CreateMultipartUpload",
            Operation::UploadPart => "UploadPart",
            Operation::UploadPartCopy => "UploadPartCopy",
            Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload => "AbortMultipartUpload",
            Operation::ListParts => "ListParts",
            Operation::GetObjectTagging => "GetObjectTagging",
            Operation::PutObjectTagging => "PutObjectTagging",
            Operation::DeleteObjectTagging => "DeleteObjectTagging",
            Operation::Other => "Other",
        }
    }

    /// True when the operation changes nothing on the backend.
    pub const fn is_read_only(self) -> bool {
        matches!(
            self,
            Operation::ListBuckets
                | Operation::HeadBucket
                | Operation::GetBucketLocation
                | Operation::ListObjects
                | Operation::ListObjectsV2
                | Operation::ListObjectVersions
                | Operation::ListMultipartUploads
                | Operation::GetBucketPolicy
                | Operation::GetObject
                | Operation::HeadObject
                | Operation::ListParts
                | Operation::GetObjectTagging
        )
    }

    /// True when sending the same request twice leaves the backend as sending it once would.
    ///
    /// Writes that name their full result are idempotent (PutObject, CopyObject, UploadPart,
    /// deletes: a second delete finds nothing and the state is the same). Three are not:
    /// CreateMultipartUpload makes a new upload each time; CompleteMultipartUpload retried after
    /// a success that the client did not hear answers `NoSuchUpload` for an object that exists;
    /// PostObject carries a browser form whose policy may forbid overwrites. `Other` is unknown,
    /// so it is treated as not idempotent.
    pub const fn is_idempotent(self) -> bool {
        if self.is_read_only() {
            return true;
        }
        matches!(
            self,
            Operation::CreateBucket
                | Operation::DeleteBucket
                | Operation::PutBucketPolicy
                | Operation::DeleteBucketPolicy
                | Operation::DeleteObjects
                | Operation::PutObject
                | Operation::CopyObject
                | Operation::DeleteObject
                | Operation::UploadPart
                | Operation::UploadPartCopy
                | Operation::AbortMultipartUpload
                | Operation::PutObjectTagging
                | Operation::DeleteObjectTagging
        )
    }

    /// The access this operation needs, for the policy engine.
    pub const fn action(self) -> Action {
        match self {
            Operation::GetObject | Operation::HeadObject | Operation::GetObjectTagging => Action::Read,
            Operation::ListBuckets
            | Operation::HeadBucket
            | Operation::GetBucketLocation
            | Operation::ListObjects
            | Operation::ListObjectsV2
            | Operation::ListObjectVersions
            | Operation::ListMultipartUploads
            | Operation::ListParts => Action::List,
            Operation::PutObject | Operation::CopyObject | Operation::PostObject | Operation::PutObjectTagging => {
                Action::Write
            }
            Operation::DeleteObject | Operation::DeleteObjects | Operation::DeleteObjectTagging => Action::Delete,
            Operation::CreateMultipartUpload
            | Operation::UploadPart
            | Operation::UploadPartCopy
            | Operation::CompleteMultipartUpload
            | Operation::AbortMultipartUpload => Action::Multipart,
            Operation::CreateBucket
            | Operation::DeleteBucket
            | Operation::GetBucketPolicy
            | Operation::PutBucketPolicy
            | Operation::DeleteBucketPolicy
            | Operation::Other => Action::BucketAdmin,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_implies_idempotent_and_names_are_unique() {
        // Proves the two flags cannot contradict each other and that metric labels are distinct.
        let mut names = std::collections::HashSet::new();
        for op in Operation::ALL {
            if op.is_read_only() {
                assert!(op.is_idempotent(), "{op} is read-only but not idempotent");
            }
            assert!(names.insert(op.name()), "duplicate name {}", op.name());
        }
        assert!(!Operation::CreateMultipartUpload.is_idempotent());
        assert!(!Operation::CompleteMultipartUpload.is_idempotent());
        assert!(!Operation::Other.is_idempotent());
        assert!(Operation::PutObject.is_idempotent());
        assert!(!Operation::PutObject.is_read_only());
    }
}
