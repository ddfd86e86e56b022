-- Retention deletes the outcomes of the day it drops before detaching the day's partition, and
-- the detach checks that no outcome still refers to it: both find a day's outcomes by this index
-- instead of reading every outcome.
create index prediction_outcomes_prediction_created_at_idx on prediction_outcomes (prediction_created_at);
