-- Lookups by a range of key values (`RecordStore::records_by_keys`: a prefix, dates up to
-- a day) compare them in byte order, whatever the database's collation is; with the column
-- in collation "C" the primary key's index is in that order, so such a lookup is one range
-- of it. Equality is the same in every deterministic collation, so no lookup changes.
ALTER TABLE record_keys ALTER COLUMN value TYPE text COLLATE "C";
