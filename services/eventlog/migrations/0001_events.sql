-- The event log, written only by the eventlog sink (webhooks/sink.py).
--
-- events: every envelope from the events topic. Ordered by tenant, then by Kafka
-- position: the topic is keyed by tenant, so (kafka_partition, kafka_offset) is a
-- total, append-only order per tenant that a cursor resumes from without gaps,
-- whatever the events' `created` times. A row's sorting key is its Kafka position, so
-- a batch the sink re-inserts after a crash has the same keys and ReplacingMergeTree
-- collapses it; before merges, queries (ordered by position) drop adjacent duplicates. No PARTITION BY: one INSERT then creates one part and
-- becomes visible atomically, which the visibility watermark below relies on.
CREATE TABLE IF NOT EXISTS events
(
    tenant LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    id String,
    type LowCardinality(String),
    api_version LowCardinality(String),
    created DateTime64(6, 'UTC'),
    -- the envelope exactly as it was on the topic: served as-is, no re-encoding
    envelope String CODEC(ZSTD(3)),
    inserted DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX events_id_bloom id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX events_created_minmax created TYPE minmax GRANULARITY 1,
    INDEX events_type_set type TYPE set(256) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, kafka_partition, kafka_offset)
TTL toDateTime(inserted) + INTERVAL $retention_days DAY;

-- attempts: one row per delivery attempt. The attempts topic is keyed by endpoint id,
-- so (kafka_partition, kafka_offset) orders one endpoint's attempts the same way.
CREATE TABLE IF NOT EXISTS attempts
(
    tenant LowCardinality(String),
    endpoint_id String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    id String,
    task_id String,
    event_id String,
    event_type LowCardinality(String),
    attempt UInt16,
    trigger LowCardinality(String),
    url String,
    status LowCardinality(String),
    response_status Nullable(UInt16),
    response_body Nullable(String) CODEC(ZSTD(3)),
    error LowCardinality(Nullable(String)),
    latency_ms Float64,
    timestamp DateTime64(6, 'UTC'),
    next_attempt_at Nullable(DateTime64(6, 'UTC')),
    outcome LowCardinality(Nullable(String)),
    inserted DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX attempts_event_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, endpoint_id, kafka_partition, kafka_offset)
TTL toDateTime(inserted) + INTERVAL $retention_days DAY;

-- endpoints: every record of the compacted endpoints topic (from the API or the
-- fanout), tombstones included (deleted = 1, empty tenant: a tombstone carries only
-- the key). Keyed by endpoint id, so one id lives in one partition and its offset
-- orders its versions; readers take argMax(..., kafka_offset) per id. Small table, so
-- ORDER BY id (a tombstone does not know its tenant) and no TTL.
CREATE TABLE IF NOT EXISTS endpoints
(
    id String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    tenant LowCardinality(String),
    deleted UInt8,
    record String,
    inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY id;

-- sink_positions: after each batch is inserted, the sink records per topic partition
-- the next offset it will read. The API serves only rows below it: a row is never
-- shown before every earlier offset of its partition is visible too.
CREATE TABLE IF NOT EXISTS sink_positions
(
    topic LowCardinality(String),
    kafka_partition UInt32,
    next_offset UInt64,
    updated DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, kafka_partition);
