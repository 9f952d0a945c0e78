-- endpoints: a superseded version of an endpoint's record may hold its signing secrets
-- sealed with a retired key (or, written before secrets were encrypted, plain). The
-- ReplacingMergeTree drops a superseded row only when a merge joins its part with the
-- newer one, which the merge selector may never choose (a large part and a small one sit
-- side by side for good). Parts older than an hour are merged regardless, so a superseded
-- version is gone from the table within about an hour of its replacement (a small table:
-- the merge rewrites it at most about once an hour, and only after a change).
ALTER TABLE endpoints MODIFY SETTING min_age_to_force_merge_seconds = 3600;
