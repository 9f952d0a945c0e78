-- dlq: every delivery task the fanout dead-lettered (the DLQ topic), as the eventlog sink
-- read it. The DLQ topic is keyed by endpoint id, so one tenant's dead tasks spread over
-- partitions; each partition is append-only, and ordering by tenant, then by Kafka
-- position, lets a cursor resume per partition without gaps, like events. A row's sorting
-- key is its Kafka position, so a batch the sink re-inserts after a crash has the same
-- keys and ReplacingMergeTree collapses it (queries drop adjacent duplicates before
-- merges). No PARTITION BY: one INSERT is one part, visible atomically (the watermark in
-- sink_positions relies on that).
CREATE TABLE IF NOT EXISTS dlq
(
    tenant LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    task_id String,
    endpoint_id String,
    event_id String,
    event_type LowCardinality(String),
    attempts UInt16,
    reason String,
    last_error LowCardinality(Nullable(String)),
    last_response_status Nullable(UInt16),
    -- when the fanout wrote the task to the DLQ (the Kafka record's timestamp)
    dead_lettered_at DateTime64(6, 'UTC'),
    -- the dead task exactly as it was on the topic (event, history, dlq_reason)
    task String CODEC(ZSTD(3)),
    inserted DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX dlq_task_bloom task_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX dlq_endpoint_bloom endpoint_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX dlq_dead_lettered_minmax dead_lettered_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, kafka_partition, kafka_offset)
TTL toDateTime(inserted) + INTERVAL $retention_days DAY;
