//! Browser form uploads as S3 stores them: the `key` field's `${filename}` is the file's name.
//! s3s hands the field to the store as it was sent, so the node resolves it first.

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, parameters) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parameters.split(';').find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// `body` (a form delimited by `boundary`) with `${filename}` in its `key` field replaced by
/// the file part's file name; `None` when there is nothing to replace.
pub fn resolve_filename(body: &[u8], boundary: &str) -> Option<Vec<u8>> {
    let delimiter = format!("--{boundary}");
    let parts = split(body, delimiter.as_bytes());
    let file_name = parts.iter().find_map(|part| {
        let head = head_of(part)?;
        (disposition_name(head)? == "file").then(|| parameter(head, "filename"))?
    })?;
    let mut replaced = false;
    let mut out = Vec::with_capacity(body.len() + file_name.len());
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(delimiter.as_bytes());
        }
        match head_of(part).and_then(disposition_name) {
            Some(name) if name.eq_ignore_ascii_case("key") && !replaced => {
                let head_length = head_of(part).map_or(0, str::len);
                let (head, value) = part.split_at(head_length);
                let text = String::from_utf8_lossy(value);
                let resolved = text.replace("${filename}", &file_name);
                replaced = resolved != text;
                out.extend_from_slice(head);
                out.extend_from_slice(resolved.as_bytes());
            }
            _ => out.extend_from_slice(part),
        }
    }
    replaced.then_some(out)
}

/// `body` cut at every `delimiter` (which is dropped).
fn split<'a>(body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(delimiter.len()).position(|window| window == delimiter) {
        parts.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    parts.push(rest);
    parts
}

/// A part's headers, through the blank line that ends them.
fn head_of(part: &[u8]) -> Option<&str> {
    let end = part.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    std::str::from_utf8(&part[..end]).ok()
}

/// The `name` of a part's `Content-Disposition: form-data`.
fn disposition_name(head: &str) -> Option<String> {
    parameter(head, "name")
}

/// A quoted parameter of the part's `Content-Disposition` header.
fn parameter(head: &str, name: &str) -> Option<String> {
    let line = head
        .split("\r\n")
        .find(|line| line.to_ascii_lowercase().starts_with("content-disposition:"))?;
    line.split(';').find_map(|item| {
        let (key, value) = item.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_takes_the_file_name_and_nothing_else_changes() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nuploads/${filename}\r\n--B\r\n\
                     Content-Disposition: form-data; name=\"file\"; filename=\"a b.jpg\"\r\n\r\n${filename} stays\r\n--B--\r\n";
        let resolved = resolve_filename(body, "B").expect("a key to resolve");
        let text = String::from_utf8(resolved).expect("text");
        assert!(text.contains("\r\n\r\nuploads/a b.jpg\r\n--B\r\n"), "{text}");
        assert!(text.contains("${filename} stays"), "the file is untouched: {text}");
        assert_eq!(text.len(), body.len() - "${filename}".len() + "a b.jpg".len());
        let plain = b"--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--B\r\n\
                      Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nx\r\n--B--\r\n";
        assert_eq!(resolve_filename(plain, "B"), None);
        assert_eq!(boundary("multipart/form-data; boundary=\"x y\""), Some("x y"));
        assert_eq!(boundary("text/plain; boundary=x"), None);
    }
}
