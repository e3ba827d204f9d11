-- Many provider accounts in one ledger (issue 18; docs/accounts.md): every row carries the
-- account it belongs to. A ledger made before accounts existed holds one account's rows:
-- they are the account `default`, which is what the top-level settings form when the
-- settings file declares no [accounts.*] table. The column default keeps statements that
-- do not name an account yet writing to `default`; a later migration makes (account,
-- uuid) the identity of a call.
ALTER TABLE calls ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE attempts ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE call_terms ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE call_terms_stale ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE call_takeovers ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE held_calls ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE tombstones ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE access_log ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE access_log_calls ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE runs ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE syncs ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE verifications ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE holds ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE manifests ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
