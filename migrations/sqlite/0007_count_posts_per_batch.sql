-- The unread counts of posts are kept by the message writer, once per room
-- and per author for a whole batch (crates/roomcast-storage/src/sqlite/
-- writer.rs, `count_posts`), instead of by a row trigger that ran two
-- UPDATEs for every message. The rule is unchanged (0005's header); only
-- where this half of it runs moved. The delete trigger and the join
-- trigger stay: deletes are rare and joins are not on the message path.
DROP TRIGGER messages_live_insert;
