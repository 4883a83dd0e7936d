//! The `s3s::S3` implementation of one node: S3 semantics over the shared [`Store`].
//!
//! Each node has its own instance (so per-node counters see its operations) over the same
//! store (so the nodes serve one namespace, as the VIPs of one cluster do).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::clock::ModelClock;
use crate::stats::NodeStats;
use crate::store::{Checksums, ListQuery, ObjectMeta, Store};

mod multipart;
mod support;

use support::*;

/// The largest body the mock accepts in one request (S3's single-PUT limit is 5 GiB; the mock
/// holds objects in memory, so it stops at 1 GiB).
pub const BODY_LENGTH_MAX: usize = 1 << 30;

/// One node's S3 service over the shared store.
#[derive(Debug, Clone)]
pub struct NodeS3 {
    store: Arc<Mutex<Store>>,
    stats: Arc<NodeStats>,
    clock: ModelClock,
}

impl NodeS3 {
    /// A node's view of `store`.
    pub fn new(store: Arc<Mutex<Store>>, stats: Arc<NodeStats>, clock: ModelClock) -> Self {
        NodeS3 { store, stats, clock }
    }

    fn store(&self, operation: &'static str) -> MutexGuard<'_, Store> {
        self.stats.operation(operation);
        self.store
            .lock()
            .expect("the store lock is never poisoned: store code does not panic")
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

#[async_trait::async_trait]
impl S3 for NodeS3 {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.store("ListBuckets").list_buckets();
        let output = ListBucketsOutput {
            buckets: Some(
                buckets
                    .into_iter()
                    .map(|(name, created)| Bucket {
                        name: Some(name),
                        creation_date: Some(timestamp(created)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            owner: Some(Owner {
                display_name: Some("s3-mock".to_owned()),
                id: Some("s3-mock".to_owned()),
            }),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let now = self.now();
        self.store("CreateBucket")
            .create_bucket(&req.input.bucket, now)
            .map_err(store_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store("DeleteBucket")
            .delete_bucket(&req.input.bucket)
            .map_err(store_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.store("HeadBucket").has_bucket(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self.store("GetBucketLocation").has_bucket(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let sent = sent_checksums(
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_sha1,
            input.checksum_sha256,
            input.checksum_crc64nvme,
        );
        let upload = Upload {
            headers: &req.headers,
            trailers: req.trailing_headers.as_ref(),
            algorithm: input.checksum_algorithm.as_ref(),
            content_md5: input.content_md5.as_deref(),
        };
        let (data, checksums) = receive_body(input.body, sent, upload).await?;
        let now = self.now();
        let mut store = self.store("PutObject");
        if let Ok(existing) = store.get_object(&input.bucket, &input.key) {
            check_conditions(
                &existing.etag,
                existing.last_modified,
                input.if_match.as_ref(),
                None,
                None,
                None,
            )?;
            if input.if_none_match.is_some() {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        } else if input.if_match.is_some() {
            return Err(s3_error!(NoSuchKey));
        }
        let meta = ObjectMeta {
            content_type: input.content_type,
            user: input.metadata.unwrap_or_default(),
            checksums: checksums.clone(),
            headers: stored_headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
            ),
        };
        let tag = store
            .put_object(&input.bucket, &input.key, data, meta, now)
            .map_err(store_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&tag)),
            checksum_crc32: checksums.crc32,
            checksum_crc32c: checksums.crc32c,
            checksum_sha1: checksums.sha1,
            checksum_sha256: checksums.sha256,
            checksum_crc64nvme: checksums.crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let object = self
            .store("GetObject")
            .get_object(&input.bucket, &input.key)
            .map_err(store_error)?
            .clone();
        check_conditions(
            &object.etag,
            object.last_modified,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let total = object.data.len() as u64;
        let (range, parts_count) = match part_range(&object, input.part_number)? {
            Some(part) => part,
            None => match input.range {
                Some(range) => {
                    let range = range
                        .check(total)
                        .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
                    (Some(range), None)
                }
                None => (None, None),
            },
        };
        let (body, content_range) = match range {
            Some(range) => {
                let content_range = format!("bytes {}-{}/{total}", range.start, range.end.saturating_sub(1));
                (
                    object.data.slice(range.start as usize..range.end as usize),
                    Some(content_range),
                )
            }
            None => (object.data.clone(), None),
        };
        let whole = content_range.is_none();
        let partial = !whole;
        let checksums = &object.meta.checksums;
        let output = GetObjectOutput {
            content_length: Some(body.len() as i64),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(etag(&object.etag)),
            last_modified: Some(timestamp(object.last_modified)),
            content_type: object.meta.content_type.clone(),
            cache_control: object.meta.headers.cache_control.clone(),
            content_disposition: object.meta.headers.content_disposition.clone(),
            content_encoding: object.meta.headers.content_encoding.clone(),
            content_language: object.meta.headers.content_language.clone(),
            expires: expires_of(&object.meta.headers),
            metadata: metadata(&object.meta.user),
            parts_count,
            // S3 returns whole-object checksums only for whole-object reads.
            checksum_crc32: checksums.crc32.clone().filter(|_| whole),
            checksum_crc32c: checksums.crc32c.clone().filter(|_| whole),
            checksum_sha1: checksums.sha1.clone().filter(|_| whole),
            checksum_sha256: checksums.sha256.clone().filter(|_| whole),
            checksum_crc64nvme: checksums.crc64nvme.clone().filter(|_| whole),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        if partial {
            response.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let object = self
            .store("HeadObject")
            .get_object(&input.bucket, &input.key)
            .map_err(store_error)?
            .clone();
        check_conditions(
            &object.etag,
            object.last_modified,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let checksums = &object.meta.checksums;
        let total = object.data.len() as u64;
        let part = part_range(&object, input.part_number)?;
        let (length, content_range) = match &part {
            Some((Some(range), _)) => (
                range.end - range.start,
                Some(format!("bytes {}-{}/{total}", range.start, range.end.saturating_sub(1))),
            ),
            _ => (total, None),
        };
        let whole = content_range.is_none();
        let mut response = S3Response::new(HeadObjectOutput {
            content_length: Some(length as i64),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(etag(&object.etag)),
            last_modified: Some(timestamp(object.last_modified)),
            content_type: object.meta.content_type.clone(),
            cache_control: object.meta.headers.cache_control.clone(),
            content_disposition: object.meta.headers.content_disposition.clone(),
            content_encoding: object.meta.headers.content_encoding.clone(),
            content_language: object.meta.headers.content_language.clone(),
            expires: expires_of(&object.meta.headers),
            metadata: metadata(&object.meta.user),
            parts_count: object.part_sizes.as_ref().map(|sizes| sizes.len() as i32),
            checksum_crc32: checksums.crc32.clone().filter(|_| whole),
            checksum_crc32c: checksums.crc32c.clone().filter(|_| whole),
            checksum_sha1: checksums.sha1.clone().filter(|_| whole),
            checksum_sha256: checksums.sha256.clone().filter(|_| whole),
            checksum_crc64nvme: checksums.crc64nvme.clone().filter(|_| whole),
            ..Default::default()
        });
        if !whole {
            response.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store("DeleteObject")
            .delete_object(&req.input.bucket, &req.input.key)
            .map_err(store_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let mut store = self.store("DeleteObjects");
        let mut deleted = Vec::with_capacity(input.delete.objects.len());
        for object in input.delete.objects {
            store.delete_object(&input.bucket, &object.key).map_err(store_error)?;
            deleted.push(DeletedObject {
                key: Some(object.key),
                version_id: object.version_id,
                ..Default::default()
            });
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|directive| directive.as_str() == MetadataDirective::REPLACE)
            .then(|| ObjectMeta {
                content_type: input.content_type.clone(),
                user: input.metadata.clone().unwrap_or_default(),
                checksums: Checksums::default(),
                headers: stored_headers(
                    input.cache_control.clone(),
                    input.content_disposition.clone(),
                    input.content_encoding.clone(),
                    input.content_language.clone(),
                    input.expires.as_ref(),
                ),
            });
        let now = self.now();
        let mut store = self.store("CopyObject");
        // The conditions are checked here; the store copies the source itself.
        copy_source(
            &store,
            (source_bucket, source_key),
            CopyConditions {
                if_match: input.copy_source_if_match.as_ref(),
                if_none_match: input.copy_source_if_none_match.as_ref(),
                if_modified_since: input.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let (tag, modified) = store
            .copy_object((source_bucket, source_key), (&input.bucket, &input.key), replace, now)
            .map_err(store_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&tag)),
                last_modified: Some(timestamp(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let query = ListQuery {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.marker.as_deref().filter(|marker| !marker.is_empty()),
            max_keys: max_keys(input.max_keys),
        };
        let page = self
            .store("ListObjects")
            .list(&input.bucket, &query)
            .map_err(store_error)?;
        let encode = url_encoder(input.encoding_type.as_ref());
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode(prefix)),
            marker: input.marker.map(&encode),
            max_keys: input.max_keys.or(Some(1000)),
            is_truncated: Some(page.truncated),
            next_marker: page.last.filter(|_| page.truncated).map(&encode),
            contents: Some(listed_objects(page.objects, &encode)),
            common_prefixes: prefixes(page.common_prefixes.into_iter().map(&encode).collect()),
            delimiter: input.delimiter.map(&encode),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let token = input.continuation_token.as_deref().map(decode_token).transpose()?;
        let after = token
            .as_deref()
            .or(input.start_after.as_deref())
            .filter(|after| !after.is_empty());
        let query = ListQuery {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after,
            max_keys: max_keys(input.max_keys),
        };
        let page = self
            .store("ListObjectsV2")
            .list(&input.bucket, &query)
            .map_err(store_error)?;
        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        let encode = url_encoder(input.encoding_type.as_ref());
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(prefix)),
            max_keys: input.max_keys.or(Some(1000)),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.last.filter(|_| page.truncated).map(|last| encode_token(&last)),
            contents: Some(listed_objects(page.objects, &encode)),
            common_prefixes: prefixes(page.common_prefixes.into_iter().map(&encode).collect()),
            delimiter: input.delimiter.map(&encode),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(&encode),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.serve_create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.serve_upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.serve_upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.serve_complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.serve_abort_multipart_upload(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.serve_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.serve_list_multipart_uploads(req).await
    }
}
