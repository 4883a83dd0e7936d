//! The in-memory object store that every node of a mock cluster shares.
//!
//! Pure data structure: no IO, no clock (callers pass the time), no randomness (upload ids
//! come from a counter), so a simulated cluster replays exactly. Errors are S3 error codes.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;
use md5::{Digest, Md5};

/// S3's smallest allowed part (except the last) in a multipart upload.
pub const MIN_PART_SIZE_DEFAULT: u64 = 5 * 1024 * 1024;
/// S3's cap on keys returned by one list call.
pub const MAX_KEYS_LIMIT: usize = 1000;

/// An S3 error code the store answers with (the caller maps it to s3s's error type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The bucket does not exist.
    NoSuchBucket,
    /// The key does not exist.
    NoSuchKey,
    /// The upload id is unknown (or was completed or aborted).
    NoSuchUpload,
    /// Creating a bucket that exists (the mock has one owner, so it is always ours).
    BucketAlreadyOwnedByYou,
    /// Deleting a bucket that holds objects or uploads.
    BucketNotEmpty,
    /// A completed part is missing or its ETag does not match.
    InvalidPart,
    /// Completed parts are not in ascending order.
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum part size.
    EntityTooSmall,
    /// A bucket name that S3 would refuse.
    InvalidBucketName,
}

/// Checksums the client supplied (base64, as on the wire), echoed on reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checksums {
    /// `x-amz-checksum-crc32`
    pub crc32: Option<String>,
    /// `x-amz-checksum-crc32c`
    pub crc32c: Option<String>,
    /// `x-amz-checksum-sha1`
    pub sha1: Option<String>,
    /// `x-amz-checksum-sha256`
    pub sha256: Option<String>,
    /// `x-amz-checksum-crc64nvme`
    pub crc64nvme: Option<String>,
}

/// What a write carries besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type`
    pub content_type: Option<String>,
    /// `x-amz-meta-*` user metadata.
    pub user: HashMap<String, String>,
    /// Checksums to echo.
    pub checksums: Checksums,
    /// The representation headers S3 keeps and returns: `Cache-Control`,
    /// `Content-Disposition`, `Content-Encoding`, `Content-Language`, `Expires`.
    pub headers: StoredHeaders,
}

/// The representation headers an object keeps, as they were sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredHeaders {
    /// `Cache-Control`
    pub cache_control: Option<String>,
    /// `Content-Disposition`
    pub content_disposition: Option<String>,
    /// `Content-Encoding` (without `aws-chunked`, which only framed the upload)
    pub content_encoding: Option<String>,
    /// `Content-Language`
    pub content_language: Option<String>,
    /// `Expires`, as an HTTP date
    pub expires: Option<String>,
}

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The bytes.
    pub data: Bytes,
    /// ETag without quotes: hex MD5, or `hex(MD5(part MD5s))-N` for multipart objects.
    pub etag: String,
    /// Last write time.
    pub last_modified: SystemTime,
    /// Content type and user metadata.
    pub meta: ObjectMeta,
    /// Sizes of the parts, for multipart objects (GET `?partNumber=`).
    pub part_sizes: Option<Vec<u64>>,
}

/// One part of an upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartData {
    /// The bytes.
    pub data: Bytes,
    /// Hex MD5.
    pub etag: String,
    /// Upload time.
    pub last_modified: SystemTime,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Target bucket.
    pub bucket: String,
    /// Target key.
    pub key: String,
    /// When it was created.
    pub initiated: SystemTime,
    /// Metadata for the final object.
    pub meta: ObjectMeta,
    /// Parts received so far.
    pub parts: BTreeMap<i32, PartData>,
}

#[derive(Clone, Debug)]
struct Bucket {
    created: SystemTime,
    objects: BTreeMap<String, Object>,
}

/// A listing request (V1 and V2 share it).
#[derive(Clone, Debug, Default)]
pub struct ListQuery<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// Roll keys up to the first delimiter after the prefix into common prefixes.
    pub delimiter: Option<&'a str>,
    /// Return entries strictly after this key (V1 marker, V2 start-after or token).
    pub after: Option<&'a str>,
    /// At most this many entries (objects plus common prefixes), capped at 1000.
    pub max_keys: usize,
}

/// A page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects: key, size, etag, last modified.
    pub objects: Vec<(String, u64, String, SystemTime)>,
    /// Common prefixes.
    pub common_prefixes: Vec<String>,
    /// More entries follow.
    pub truncated: bool,
    /// The last entry returned (key or common prefix), to resume after.
    pub last: Option<String>,
}

/// The cluster's one namespace.
#[derive(Debug)]
pub struct Store {
    buckets: BTreeMap<String, Bucket>,
    uploads: BTreeMap<String, Upload>,
    next_upload: u64,
    min_part_size: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(MIN_PART_SIZE_DEFAULT)
    }
}

impl Store {
    /// An empty store enforcing `min_part_size` for all parts but the last.
    pub fn new(min_part_size: u64) -> Self {
        Store {
            buckets: BTreeMap::new(),
            uploads: BTreeMap::new(),
            next_upload: 1,
            min_part_size,
        }
    }

    /// Bucket names with their creation times, sorted.
    pub fn list_buckets(&self) -> Vec<(String, SystemTime)> {
        self.buckets
            .iter()
            .map(|(name, bucket)| (name.clone(), bucket.created))
            .collect()
    }

    /// Create a bucket.
    pub fn create_bucket(&mut self, name: &str, now: SystemTime) -> Result<(), StoreError> {
        if !valid_bucket_name(name) {
            return Err(StoreError::InvalidBucketName);
        }
        if self.buckets.contains_key(name) {
            return Err(StoreError::BucketAlreadyOwnedByYou);
        }
        self.buckets.insert(
            name.to_owned(),
            Bucket {
                created: now,
                objects: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Delete a bucket that holds no objects. Uploads still in progress do not keep it (S3
    /// deletes a bucket with only unfinished uploads, and they are gone with it).
    pub fn delete_bucket(&mut self, name: &str) -> Result<(), StoreError> {
        let bucket = self.buckets.get(name).ok_or(StoreError::NoSuchBucket)?;
        if !bucket.objects.is_empty() {
            return Err(StoreError::BucketNotEmpty);
        }
        self.buckets.remove(name);
        self.uploads.retain(|_, upload| upload.bucket != name);
        Ok(())
    }

    /// True when the bucket exists.
    pub fn has_bucket(&self, name: &str) -> bool {
        self.buckets.contains_key(name)
    }

    /// Store an object, replacing any previous one. Returns its ETag.
    pub fn put_object(
        &mut self,
        bucket: &str,
        key: &str,
        data: Bytes,
        meta: ObjectMeta,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let objects = &mut self.buckets.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?.objects;
        let etag = md5_hex(&data);
        objects.insert(
            key.to_owned(),
            Object {
                data,
                etag: etag.clone(),
                last_modified: now,
                meta,
                part_sizes: None,
            },
        );
        Ok(etag)
    }

    /// The object at `bucket/key`.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<&Object, StoreError> {
        let bucket = self.buckets.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        bucket.objects.get(key).ok_or(StoreError::NoSuchKey)
    }

    /// Delete an object; deleting a missing key succeeds, as in S3.
    pub fn delete_object(&mut self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let bucket = self.buckets.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        bucket.objects.remove(key);
        Ok(())
    }

    /// Copy an object (metadata copied unless `replace` gives new metadata).
    pub fn copy_object(
        &mut self,
        source: (&str, &str),
        target: (&str, &str),
        replace: Option<ObjectMeta>,
        now: SystemTime,
    ) -> Result<(String, SystemTime), StoreError> {
        let original = self.get_object(source.0, source.1)?.clone();
        let objects = &mut self.buckets.get_mut(target.0).ok_or(StoreError::NoSuchBucket)?.objects;
        let copy = Object {
            last_modified: now,
            meta: replace.unwrap_or(original.meta.clone()),
            ..original
        };
        let etag = copy.etag.clone();
        objects.insert(target.1.to_owned(), copy);
        Ok((etag, now))
    }

    /// List objects.
    pub fn list(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage, StoreError> {
        let objects = &self.buckets.get(bucket).ok_or(StoreError::NoSuchBucket)?.objects;
        let max_keys = query.max_keys.min(MAX_KEYS_LIMIT);
        let mut page = ListPage::default();
        // S3 answers `max-keys=0` with an empty page that is not truncated.
        if max_keys == 0 {
            return Ok(page);
        }
        let start = match query.after {
            Some(after) if after >= query.prefix => after,
            _ => query.prefix,
        };
        let mut entries = 0usize;
        for (key, object) in objects.range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded)) {
            if !key.starts_with(query.prefix) {
                break;
            }
            if query.after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let rolled = query.delimiter.filter(|d| !d.is_empty()).and_then(|delimiter| {
                key[query.prefix.len()..]
                    .find(delimiter)
                    .map(|at| key[..query.prefix.len() + at + delimiter.len()].to_owned())
            });
            // Resuming after a common prefix: skip the rest of its keys.
            if let (Some(common), Some(after)) = (&rolled, query.after)
                && common.as_str() <= after
            {
                continue;
            }
            if let Some(common) = &rolled
                && page.common_prefixes.last() == Some(common)
            {
                continue;
            }
            if entries == max_keys {
                page.truncated = true;
                break;
            }
            entries += 1;
            match rolled {
                Some(common) => {
                    page.last = Some(common.clone());
                    page.common_prefixes.push(common);
                }
                None => {
                    page.last = Some(key.clone());
                    page.objects.push((
                        key.clone(),
                        object.data.len() as u64,
                        object.etag.clone(),
                        object.last_modified,
                    ));
                }
            }
        }
        Ok(page)
    }

    /// Start a multipart upload; returns its id.
    pub fn create_upload(
        &mut self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        if !self.buckets.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket);
        }
        let id = format!("upload-{:016x}", self.next_upload);
        self.next_upload += 1;
        self.uploads.insert(
            id.clone(),
            Upload {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                initiated: now,
                meta,
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Store a part (replacing a previous part with the same number). Returns its ETag.
    pub fn upload_part(
        &mut self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        data: Bytes,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let upload = self.upload_mut(bucket, key, upload_id)?;
        let etag = md5_hex(&data);
        upload.parts.insert(
            part_number,
            PartData {
                data,
                etag: etag.clone(),
                last_modified: now,
            },
        );
        Ok(etag)
    }

    /// The upload with this id, checked against bucket and key.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<&Upload, StoreError> {
        if !self.buckets.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket);
        }
        self.uploads
            .get(upload_id)
            .filter(|upload| upload.bucket == bucket && upload.key == key)
            .ok_or(StoreError::NoSuchUpload)
    }

    /// Uploads in progress in `bucket` whose key starts with `prefix`, by key then id.
    pub fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, &Upload)>, StoreError> {
        if !self.buckets.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket);
        }
        let mut uploads: Vec<(String, &Upload)> = self
            .uploads
            .iter()
            .filter(|(_, upload)| upload.bucket == bucket && upload.key.starts_with(prefix))
            .map(|(id, upload)| (id.clone(), upload))
            .collect();
        uploads.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        Ok(uploads)
    }

    /// Abort an upload, dropping its parts.
    pub fn abort_upload(&mut self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.upload(bucket, key, upload_id)?;
        self.uploads.remove(upload_id);
        Ok(())
    }

    /// Complete an upload from the listed `(part number, etag)` pairs: parts ascending, each
    /// present with a matching ETag, all but the last at least the minimum part size. The
    /// object's ETag is `hex(MD5(concatenated binary part MD5s))-N`, as S3 computes it.
    pub fn complete_upload(
        &mut self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let upload = self.upload(bucket, key, upload_id)?;
        if parts.is_empty() {
            return Err(StoreError::InvalidPart);
        }
        if parts.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(StoreError::InvalidPartOrder);
        }
        let mut chosen = Vec::with_capacity(parts.len());
        for (index, (number, etag)) in parts.iter().enumerate() {
            let part = upload.parts.get(number).ok_or(StoreError::InvalidPart)?;
            if part.etag != etag.trim_matches('"') {
                return Err(StoreError::InvalidPart);
            }
            let last = index + 1 == parts.len();
            if !last && (part.data.len() as u64) < self.min_part_size {
                return Err(StoreError::EntityTooSmall);
            }
            chosen.push(part);
        }
        let mut digests = Md5::new();
        let mut data = Vec::with_capacity(chosen.iter().map(|part| part.data.len()).sum());
        for part in &chosen {
            digests.update(hex::decode(&part.etag).expect("part ETags are hex MD5s we computed"));
            data.extend_from_slice(&part.data);
        }
        let etag = format!("{}-{}", hex::encode(digests.finalize()), chosen.len());
        let part_sizes = chosen.iter().map(|part| part.data.len() as u64).collect();
        let meta = upload.meta.clone();
        self.uploads.remove(upload_id);
        let objects = &mut self.buckets.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?.objects;
        objects.insert(
            key.to_owned(),
            Object {
                data: Bytes::from(data),
                etag: etag.clone(),
                last_modified: now,
                meta,
                part_sizes: Some(part_sizes),
            },
        );
        Ok(etag)
    }

    fn upload_mut(&mut self, bucket: &str, key: &str, upload_id: &str) -> Result<&mut Upload, StoreError> {
        self.upload(bucket, key, upload_id)?;
        Ok(self.uploads.get_mut(upload_id).expect("checked above"))
    }
}

/// Hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// S3's rules for new bucket names: 3 to 63 of lowercase letters, digits, '.' and '-',
/// starting and ending with a letter or digit.
pub fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn store_with(keys: &[&str]) -> Store {
        let mut store = Store::new(5);
        store.create_bucket("bkt", now()).expect("new bucket");
        for key in keys {
            store
                .put_object("bkt", key, Bytes::from_static(b"x"), ObjectMeta::default(), now())
                .expect("put");
        }
        store
    }

    fn page(store: &Store, prefix: &str, delimiter: Option<&str>, after: Option<&str>, max_keys: usize) -> ListPage {
        store
            .list(
                "bkt",
                &ListQuery {
                    prefix,
                    delimiter,
                    after,
                    max_keys,
                },
            )
            .expect("bucket exists")
    }

    #[test]
    fn listing_rolls_up_prefixes_and_pages_without_repeats() {
        // Proves delimiter roll-up and that paging resumes after a common prefix exactly.
        let store = store_with(&["a/1", "a/2", "b", "c/1", "c/2/x", "d"]);
        let first = page(&store, "", Some("/"), None, 2);
        assert_eq!(first.common_prefixes, vec!["a/"]);
        assert_eq!(
            first.objects.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        assert!(first.truncated);
        let second = page(&store, "", Some("/"), first.last.as_deref(), 2);
        assert_eq!(second.common_prefixes, vec!["c/"]);
        assert_eq!(
            second.objects.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
            vec!["d"]
        );
        assert!(!second.truncated);
        // Under a prefix, one more level.
        let nested = page(&store, "c/", Some("/"), None, 10);
        assert_eq!(nested.common_prefixes, vec!["c/2/"]);
        assert_eq!(nested.objects.len(), 1);
        // Without a delimiter, every key; start-after skips.
        let flat = page(&store, "", None, Some("b"), 1000);
        assert_eq!(
            flat.objects.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
            vec!["c/1", "c/2/x", "d"]
        );
        assert!(page(&store, "", None, None, 0).objects.is_empty());
    }

    #[test]
    fn multipart_etag_and_rules_match_s3() {
        // Proves the multipart ETag formula and the part rules.
        let mut store = store_with(&[]);
        let id = store
            .create_upload("bkt", "big", ObjectMeta::default(), now())
            .expect("upload");
        let first = store
            .upload_part("bkt", "big", &id, 1, Bytes::from_static(b"hello"), now())
            .expect("part");
        let second = store
            .upload_part("bkt", "big", &id, 2, Bytes::from_static(b"!"), now())
            .expect("part");
        assert_eq!(
            store.complete_upload("bkt", "big", &id, &[(2, second.clone()), (1, first.clone())], now()),
            Err(StoreError::InvalidPartOrder)
        );
        assert_eq!(
            store.complete_upload("bkt", "big", &id, &[(1, "00".into())], now()),
            Err(StoreError::InvalidPart)
        );
        let tiny = store
            .create_upload("bkt", "tiny", ObjectMeta::default(), now())
            .expect("upload");
        let a = store
            .upload_part("bkt", "tiny", &tiny, 1, Bytes::from_static(b"ab"), now())
            .expect("part");
        let b = store
            .upload_part("bkt", "tiny", &tiny, 2, Bytes::from_static(b"cd"), now())
            .expect("part");
        assert_eq!(
            store.complete_upload("bkt", "tiny", &tiny, &[(1, a), (2, b)], now()),
            Err(StoreError::EntityTooSmall)
        );
        let etag = store
            .complete_upload(
                "bkt",
                "big",
                &id,
                &[(1, format!("\"{first}\"")), (2, second.clone())],
                now(),
            )
            .expect("complete");
        let mut both = hex::decode(&first).expect("hex");
        both.extend(hex::decode(&second).expect("hex"));
        assert_eq!(etag, format!("{}-2", md5_hex(&both)));
        let object = store.get_object("bkt", "big").expect("exists");
        assert_eq!(&object.data[..], b"hello!");
        assert_eq!(object.part_sizes, Some(vec![5, 1]));
        assert_eq!(store.upload("bkt", "big", &id), Err(StoreError::NoSuchUpload));
    }

    #[test]
    fn bucket_rules() {
        // Proves BucketNotEmpty (objects), that unfinished uploads go with their bucket (as in
        // S3), NoSuchBucket and name validation.
        let mut store = store_with(&["k"]);
        assert_eq!(store.delete_bucket("bkt"), Err(StoreError::BucketNotEmpty));
        store.delete_object("bkt", "k").expect("delete");
        let id = store
            .create_upload("bkt", "k", ObjectMeta::default(), now())
            .expect("upload");
        store.delete_bucket("bkt").expect("only an unfinished upload left");
        store.create_bucket("bkt", now()).expect("again");
        assert_eq!(
            store.upload("bkt", "k", &id),
            Err(StoreError::NoSuchUpload),
            "the upload went with its bucket"
        );
        assert!(store.list_uploads("bkt", "").expect("listed").is_empty());
        store.delete_bucket("bkt").expect("empty now");
        assert_eq!(store.delete_bucket("bkt"), Err(StoreError::NoSuchBucket));
        assert_eq!(
            store.create_bucket("Bad_Name", now()),
            Err(StoreError::InvalidBucketName)
        );
        assert_eq!(store.get_object("nope", "k"), Err(StoreError::NoSuchBucket));
    }
}
