-- What each API's current model has already seen (the levels it flagged:
-- `Model::score_seen`), with the model's version and training time, saved
-- with the watermark so that a restarted detector does not flag a level it
-- already flagged. NULL until the first check scored with a model.
ALTER TABLE detector_watermarks ADD COLUMN IF NOT EXISTS seen_state jsonb;
