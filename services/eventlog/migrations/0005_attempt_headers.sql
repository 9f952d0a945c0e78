-- Each attempt's headers (attempt records since 2026-12-04): the request's as sent, the
-- signature included and the values of secret custom headers masked, and the response's
-- first 4 KiB, each as the JSON text of [[name, value], …] in the order sent. JSON text,
-- not Array(Tuple(String, String)): the sink's driver writes a String ~20x faster than an
-- array of tuples (~2.5 against ~50 us a row, measured with chDB). '' where none were
-- recorded (rows of older records, nothing sent, no response), which the API shows as null.
-- (0004 is reserved for the endpoints table's forced merge.)
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS request_headers String DEFAULT '' CODEC(ZSTD(3));
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS response_headers String DEFAULT '' CODEC(ZSTD(3));
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS response_headers_truncated Bool DEFAULT false;
-- One attempt by id (GET /v1/endpoints/{id}/attempts/{attempt_id}, the dashboard's attempt
-- page): the sorting key narrows to the endpoint, this index to a few of its granules.
ALTER TABLE attempts ADD INDEX IF NOT EXISTS attempts_id_bloom id TYPE bloom_filter(0.001) GRANULARITY 4;
-- Existing parts get the index too (a background mutation; harmless to repeat).
ALTER TABLE attempts MATERIALIZE INDEX attempts_id_bloom
