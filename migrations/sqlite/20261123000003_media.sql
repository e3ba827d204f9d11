-- What the media check learnt from an archived recording: its duration from the file's
-- header (WAV), and a note when that disagrees with the call's billed seconds.
ALTER TABLE calls ADD COLUMN media_duration_ms BIGINT;
ALTER TABLE calls ADD COLUMN media_note TEXT;
