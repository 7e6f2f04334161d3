-- Every claim batch updates its lanes' `queued` and `last_served`. While an index covers those
-- columns, each update is a new row version the index must point at, and the lanes table and its
-- index fill with dead versions faster than autovacuum removes them: claims read the whole table,
-- so their cost grew with the bloat. Without the index the updates are heap-only (HOT): old
-- versions are pruned within the page and the table stays a page or two. Dispatch reads every
-- lane with work anyway, and the index cannot give its order (priority descending, last_served
-- ascending). SQLite keeps the index: it updates rows in place.
DROP INDEX lanes_pick;
