-- The sink looks up recently inserted event ids before each insert (an event appended to
-- the topic twice is stored once). Parts are written in time order, so a minmax index on
-- `inserted` lets that lookup skip every part older than its window.
ALTER TABLE events ADD INDEX IF NOT EXISTS events_inserted_minmax inserted TYPE minmax GRANULARITY 1;
-- Existing parts get the index too (a background mutation; harmless to repeat).
ALTER TABLE events MATERIALIZE INDEX events_inserted_minmax
