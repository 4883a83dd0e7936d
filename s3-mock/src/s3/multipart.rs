//! Multipart uploads of one node: create, parts (uploaded or copied from objects), list,
//! complete, abort. The `S3` implementation in the parent module hands these operations here.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::NodeS3;
use super::support::*;
use crate::store::{Checksums, ObjectMeta};

impl NodeS3 {
    pub(super) async fn serve_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let meta = ObjectMeta {
            content_type: input.content_type,
            user: input.metadata.unwrap_or_default(),
            checksums: Checksums::default(),
            headers: stored_headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
            ),
        };
        let now = self.now();
        let upload_id = self
            .store("CreateMultipartUpload")
            .create_upload(&input.bucket, &input.key, meta, now)
            .map_err(store_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        // Fail before reading the body when the upload does not exist.
        self.store("UploadPart")
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(store_error)?;
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
        let tag = self
            .store
            .lock()
            .expect("the store lock is never poisoned")
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                data,
                now,
            )
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&tag)),
            checksum_crc32: checksums.crc32,
            checksum_crc32c: checksums.crc32c,
            checksum_sha1: checksums.sha1,
            checksum_sha256: checksums.sha256,
            checksum_crc64nvme: checksums.crc64nvme,
            ..Default::default()
        }))
    }

    pub(super) async fn serve_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        let now = self.now();
        let mut store = self.store("UploadPartCopy");
        store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(store_error)?;
        let source = copy_source(
            &store,
            (source_bucket, source_key),
            CopyConditions {
                if_match: input.copy_source_if_match.as_ref(),
                if_none_match: input.copy_source_if_none_match.as_ref(),
                if_modified_since: input.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let data = match input.copy_source_range.as_deref() {
            Some(range) => {
                let range = copy_source_range(range, source.data.len() as u64)?;
                source.data.slice(range.start as usize..range.end as usize)
            }
            None => source.data.clone(),
        };
        let tag = store
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                data,
                now,
            )
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&tag)),
                last_modified: Some(timestamp(now)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|part| {
                let number = part
                    .part_number
                    .ok_or_else(|| s3_error!(InvalidPart, "a part has no PartNumber"))?;
                let tag = part.e_tag.ok_or_else(|| s3_error!(InvalidPart, "a part has no ETag"))?;
                Ok((number, tag.value().to_owned()))
            })
            .collect::<S3Result<_>>()?;
        let now = self.now();
        let tag = self
            .store("CompleteMultipartUpload")
            .complete_upload(&input.bucket, &input.key, &input.upload_id, &parts, now)
            .map_err(store_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&tag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.store("AbortMultipartUpload")
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(store_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn serve_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let store = self.store("ListParts");
        let upload = store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(store_error)?;
        let marker = input.part_number_marker.unwrap_or(0);
        let limit = input
            .max_parts
            .map_or(1000, |max| usize::try_from(max.clamp(0, 1000)).unwrap_or(0));
        let mut parts: Vec<Part> = upload
            .parts
            .range(marker + 1..)
            .take(limit + 1)
            .map(|(number, part)| Part {
                part_number: Some(*number),
                e_tag: Some(etag(&part.etag)),
                size: Some(part.data.len() as i64),
                last_modified: Some(timestamp(part.last_modified)),
                ..Default::default()
            })
            .collect();
        let truncated = parts.len() > limit;
        parts.truncate(limit);
        let next = parts.last().and_then(|part| part.part_number).filter(|_| truncated);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(i32::try_from(limit).unwrap_or(1000)),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    pub(super) async fn serve_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let store = self.store("ListMultipartUploads");
        let uploads = store.list_uploads(&input.bucket, &prefix).map_err(store_error)?;
        let limit = input
            .max_uploads
            .map_or(1000, |max| usize::try_from(max.clamp(0, 1000)).unwrap_or(0));
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let mut listed: Vec<MultipartUpload> = uploads
            .into_iter()
            .filter(|(id, upload)| (upload.key.as_str(), id.as_str()) > (key_marker.as_str(), id_marker.as_str()))
            .take(limit + 1)
            .map(|(id, upload)| MultipartUpload {
                key: Some(upload.key.clone()),
                upload_id: Some(id),
                initiated: Some(timestamp(upload.initiated)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let truncated = listed.len() > limit;
        listed.truncate(limit);
        let last = listed.last().filter(|_| truncated);
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: last.and_then(|upload| upload.key.clone()),
            next_upload_id_marker: last.and_then(|upload| upload.upload_id.clone()),
            max_uploads: Some(i32::try_from(limit).unwrap_or(1000)),
            is_truncated: Some(truncated),
            uploads: Some(listed),
            ..Default::default()
        }))
    }
}
