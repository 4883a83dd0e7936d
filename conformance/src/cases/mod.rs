//! The cases, by area. Each is an `async fn(&Ctx) -> Outcome` that creates what it needs in
//! its own bucket; [`all`] lists them in the order they run.

use crate::Case;

mod auth;
mod buckets;
mod forms;
mod listing;
mod multipart;
mod objects;

macro_rules! case {
    ($name:expr, $run:path) => {
        Case {
            name: $name,
            run: |ctx| Box::pin($run(ctx)),
            sigv2: false,
        }
    };
    ($name:expr, $run:path, sigv2) => {
        Case {
            name: $name,
            run: |ctx| Box::pin($run(ctx)),
            sigv2: true,
        }
    };
}

/// Every case, in order.
pub fn all() -> Vec<Case> {
    vec![
        case!("buckets/lifecycle", buckets::lifecycle),
        case!("buckets/not-empty", buckets::not_empty),
        case!("buckets/only-unfinished-upload", buckets::only_unfinished_upload),
        case!("objects/put-get-head", objects::put_get_head),
        case!("objects/representation-headers", objects::representation_headers),
        case!("objects/ranges", objects::ranges),
        case!("objects/conditional-reads", objects::conditional_reads),
        case!("objects/missing", objects::missing),
        case!("objects/checksums", objects::checksums),
        case!("objects/streamed-file-upload", objects::streamed_file_upload),
        case!("objects/large", objects::large),
        case!("objects/part-number-single-part", objects::part_number_single_part),
        case!("objects/copy", objects::copy),
        case!("objects/copy-source-conditions", objects::copy_source_conditions),
        case!("objects/delete", objects::delete),
        case!("listing/v2-delimiter-and-pages", listing::v2_delimiter_and_pages),
        case!("listing/v1-markers", listing::v1_markers),
        case!("listing/encoding-type-url", listing::encoding_type_url),
        case!("listing/max-keys-zero", listing::max_keys_zero),
        case!("multipart/upload", multipart::upload),
        case!("multipart/abort", multipart::abort),
        case!("multipart/part-too-small", multipart::part_too_small),
        case!("multipart/upload-part-copy", multipart::upload_part_copy),
        case!("auth/wrong-secret", auth::wrong_secret),
        case!("auth/unknown-key", auth::unknown_key),
        case!("auth/presigned-get-put", auth::presigned_get_put),
        case!("auth/presigned-expired", auth::presigned_expired),
        case!("auth/sigv2-presigned", auth::sigv2_presigned, sigv2),
        case!("forms/post-object", forms::post_object),
        case!("forms/policy-conditions", forms::policy_conditions),
        case!("forms/size-range", forms::size_range),
        case!("forms/bad-signature", forms::bad_signature),
    ]
}
