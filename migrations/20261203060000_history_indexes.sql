-- History filtered by status REJECTED or FAILED: those rows are few, and without an index of
-- their own a page of them would scan the OK rows of the whole log. A partial index costs
-- nothing on the insert of an OK row.
create index prediction_log_not_ok_idx on prediction_log (created_at desc, id desc) where status <> 'ok';
