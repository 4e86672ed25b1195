//! Segment object format: batches followed by an offset + time index footer.
