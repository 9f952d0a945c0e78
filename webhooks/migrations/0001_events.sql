-- Every envelope from the events topic. Ordered by tenant, then by Kafka position:
-- a tenant's events all live in one partition (the topic is keyed by tenant), so
-- (kafka_partition, kafka_offset) is a total, append-only order per tenant that a
-- cursor can resume from without gaps, whatever the events' `created` times.
-- ReplacingMergeTree collapses a batch that the sink re-inserts after a crash.
CREATE TABLE IF NOT EXISTS events
(
    tenant LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    id String,
    type LowCardinality(String),
    api_version LowCardinality(String),
    created DateTime64(6, 'UTC'),
    data String CODEC(ZSTD(3)),
    inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, kafka_partition, kafka_offset)
TTL toDateTime(inserted) + INTERVAL $retention_days DAY;
