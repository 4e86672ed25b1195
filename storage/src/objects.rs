//! Building an object store from a URL: `file:///path`, `memory://`, `s3://bucket/prefix`.
